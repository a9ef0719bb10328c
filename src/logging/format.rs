//! How log lines are written: the field formatter of the text log, and the JSON event
//! formatter of the audit log and of the operational log in JSON mode. Both pass every value,
//! message and span field through [`Escaping`], so no call site can let a client's bytes
//! through raw. No I/O here.

use std::fmt::{self, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::{escape, Escaping};

/// Formats the fields of events and spans as `message name=value ...`, escaped.
pub struct SafeFields;

pub struct SafeVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

/// Formats an event as one JSON object per line, its fields flattened beside `timestamp`,
/// `level` and `target`, and the spans it happened in (`conn{peer=...}`) under `span`;
/// every string value escaped before JSON encoding. The audit log and `--log-format json`.
pub struct JsonLines;

// === impl SafeFields ===

impl<'w> MakeVisitor<Writer<'w>> for SafeFields {
    type Visitor = SafeVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> SafeVisitor<'w> {
        SafeVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

impl SafeVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        // Metadata of records bridged from the `log` crate, shown elsewhere in the line.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if self.empty { "" } else { " " };
        self.empty = false;
        self.result = if name == "message" {
            write!(self.writer, "{separator}")
        } else {
            let name = name.trim_start_matches("r#");
            write!(self.writer, "{separator}{name}=")
        }
        .and_then(|()| Escaping::new(&mut self.writer).write_fmt(value));
    }
}

impl Visit for SafeVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for SafeVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for SafeVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

// === impl JsonLines ===

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut object = Map::new();
        object.insert("timestamp".into(), timestamp.into());
        object.insert("level".into(), event.metadata().level().as_str().into());
        event.record(&mut JsonVisitor(&mut object));
        object.insert("target".into(), event.metadata().target().into());
        if let Some(spans) = spans(ctx) {
            object.insert("span".into(), spans.into());
        }
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// The spans around the event, outermost first (`conn{peer=10.0.0.1:5000}`), with their
/// fields as the layer's field formatter (escaping) wrote them.
fn spans<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let scope = ctx.event_scope()?;
    let mut spans = Vec::new();
    for span in scope.from_root() {
        let extensions = span.extensions();
        let fields = extensions
            .get::<FormattedFields<N>>()
            .map(|f| f.fields.as_str())
            .unwrap_or_default();
        spans.push(match fields {
            "" => span.name().to_owned(),
            fields => format!("{}{{{}}}", span.name(), fields),
        });
    }
    (!spans.is_empty()).then(|| spans.join(":"))
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), escape(value).into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
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
