use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use super::format::{JsonLines, SafeFields};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

const HOSTILE: &str = "orders\x1b[2J\r\nINFO fake line\0\u{9b}31m\u{202e}";

fn assert_no_control(text: &str) {
    let body = text.strip_suffix('\n').unwrap_or(text);
    assert!(
        !body.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{text:?}"
    );
}

#[test]
fn every_field_message_and_span_of_the_text_log_is_escaped() {
    let out = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(out.clone())
        .with_ansi(false)
        .fmt_fields(SafeFields);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("conn", peer = %HOSTILE);
        let _entered = span.enter();
        let error = std::io::Error::other(HOSTILE);
        tracing::warn!(topic = %HOSTILE, name = HOSTILE, ?error, "refused {HOSTILE}");
    });
    let text = out.text();
    assert_no_control(&text);
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    assert!(text.contains("topic=orders\\x1b[2J\\r\\nINFO fake line\\0\\u{9b}31m\\u{202e}"));
    assert!(text.contains("conn{peer=orders\\x1b[2J"), "{text}");
    assert!(text.contains("refused orders\\x1b"), "{text}");
}

#[test]
fn audit_json_lines_carry_escaped_strings() {
    let out = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .event_format(JsonLines)
        .with_writer(out.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "audit", identity = %HOSTILE, topic = HOSTILE, n = 3u64, "audit");
    });
    let text = out.text();
    assert_no_control(&text);
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(
        line["identity"],
        "orders\\x1b[2J\\r\\nINFO fake line\\0\\u{9b}31m\\u{202e}"
    );
    assert_eq!(line["topic"], line["identity"]);
    assert_eq!(line["n"], 3);
    assert_eq!(line["message"], "audit");
    assert_eq!(line["target"], "audit");
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn json_lines_name_the_spans_around_the_event_escaped() {
    let out = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .event_format(JsonLines)
        .fmt_fields(SafeFields)
        .with_writer(out.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("conn", peer = %HOSTILE);
        let _entered = span.enter();
        tracing::warn!(kind = "limit", "connection ended");
    });
    let text = out.text();
    assert_no_control(&text);
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["message"], "connection ended");
    assert_eq!(line["level"], "WARN");
    let span = line["span"].as_str().unwrap();
    assert!(span.starts_with("conn{peer=orders\\x1b[2J"), "{span}");
}

#[test]
fn log_formats_are_text_and_json_only() {
    use super::LogFormat;
    assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
    assert!("JSON ".parse::<LogFormat>().is_err());
}
