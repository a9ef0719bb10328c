use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use super::escape::escape;
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

/// The JSON formatter as it was before it wrote the JSON itself: every field into a
/// serde_json `Map` of `Value`s, rendered at the end. The reference for the bytes.
struct ValueLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for ValueLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        use tracing::field::{Field, Visit};

        struct Fields<'a>(&'a mut Map<String, Value>);
        impl Visit for Fields<'_> {
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.insert(field.name().into(), escape(value).into());
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let text = escape(&format!("{value:?}"));
                self.0.insert(field.name().into(), text.into());
            }
            fn record_i64(&mut self, field: &Field, value: i64) {
                self.0.insert(field.name().into(), value.into());
            }
            fn record_u64(&mut self, field: &Field, value: u64) {
                self.0.insert(field.name().into(), value.into());
            }
            fn record_bool(&mut self, field: &Field, value: bool) {
                self.0.insert(field.name().into(), value.into());
            }
            fn record_f64(&mut self, field: &Field, value: f64) {
                self.0.insert(field.name().into(), value.into());
            }
        }

        let mut object = Map::new();
        object.insert("timestamp".into(), "T".into());
        object.insert("level".into(), event.metadata().level().as_str().into());
        event.record(&mut Fields(&mut object));
        object.insert("target".into(), event.metadata().target().into());
        let spans: Vec<String> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .map(|span| {
                let extensions = span.extensions();
                let fields = extensions
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    .map(|f| f.fields.to_string())
                    .unwrap_or_default();
                match fields.as_str() {
                    "" => span.name().to_owned(),
                    fields => format!("{}{{{}}}", span.name(), fields),
                }
            })
            .collect();
        if !spans.is_empty() {
            object.insert("span".into(), spans.join(":").into());
        }
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// `line` with its timestamp's value replaced by `T` (two formatters read the clock apart).
fn without_timestamp(line: &str) -> String {
    let start = line.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len();
    let end = start + line[start..].find('"').unwrap();
    format!("{}T{}", &line[..start], &line[end..])
}

#[test]
fn json_lines_are_the_bytes_serde_json_wrote_from_a_map() {
    let written = Captured::default();
    let reference = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .fmt_fields(SafeFields)
                .with_writer(written.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(ValueLines)
                .fmt_fields(SafeFields)
                .with_writer(reference.clone()),
        );
    let quoted = "say \"hi\" \\ é 東京 \u{7f}";
    tracing::subscriber::with_default(subscriber, || {
        // An audit line as `audit::write` emits it, hostile values in its fields.
        let span = tracing::info_span!("conn", peer = %HOSTILE);
        let _entered = span.enter();
        tracing::warn!(
            target: "audit",
            remote = %"127.0.0.1:5000",
            identity = %HOSTILE,
            method = %quoted,
            action = %"auth",
            topic = %"",
            outcome = %"failure",
            reason = %format!("{HOSTILE}\n{quoted}"),
            repeats = 0u64,
            "audit"
        );
        // Every kind of value, and fields that share a name with the line's own.
        let error = std::io::Error::other(quoted);
        tracing::info!(
            signed = -7i64,
            ratio = 0.1f64 + 0.2,
            nan = f64::NAN,
            yes = true,
            ?error,
            level = "shadows the level",
            target = "shadowed by the target",
            "plain {quoted}"
        );
        tracing::info!("outside {}", "any span");
    });
    let written = written.text();
    let reference = reference.text();
    assert_eq!(written.lines().count(), 3, "{written}");
    for (line, expected) in written.lines().zip(reference.lines()) {
        assert_eq!(without_timestamp(line), expected);
    }
    assert!(written.ends_with('\n'));
}
