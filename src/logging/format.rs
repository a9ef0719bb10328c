//! How log lines are written: the field formatter of the text log, and the JSON event
//! formatter of the audit log and of the operational log in JSON mode. Both pass every value,
//! message and span field through [`Escaping`], so no call site can let a client's bytes
//! through raw. No I/O here.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::Escaping;
use super::json::JsonObject;

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
        let mut object = JsonObject::default();
        object.string("timestamp", |out| {
            SystemTime.format_time(&mut Writer::new(out))
        })?;
        let metadata = event.metadata();
        object.string("level", |out| out.write_str(metadata.level().as_str()))?;
        let mut visitor = JsonVisitor {
            object: &mut object,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        object.string("target", |out| out.write_str(metadata.target()))?;
        if let Some(spans) = spans(ctx) {
            object.string("span", |out| out.write_str(&spans))?;
        }
        object.write_to(&mut writer)?;
        writer.write_char('\n')
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
    let mut spans = String::new();
    let mut first = true;
    for span in scope.from_root() {
        if !first {
            spans.push(':');
        }
        first = false;
        spans.push_str(span.name());
        let extensions = span.extensions();
        let fields = extensions
            .get::<FormattedFields<N>>()
            .map(|f| f.fields.as_str())
            .unwrap_or_default();
        if !fields.is_empty() {
            spans.push('{');
            spans.push_str(fields);
            spans.push('}');
        }
    }
    (!first).then_some(spans)
}

/// Records an event's fields into its line's object, every string through [`Escaping`].
struct JsonVisitor<'a> {
    object: &'a mut JsonObject,
    /// A value's `Debug` may fail; the line is then not written.
    result: fmt::Result,
}

impl JsonVisitor<'_> {
    fn escaped(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let written = self
            .object
            .string(field.name(), |out| Escaping::new(out).write_fmt(value));
        self.result = self.result.and(written);
    }

    fn raw(&mut self, field: &Field, json: fmt::Arguments<'_>) {
        let written = self.object.raw(field.name(), json);
        self.result = self.result.and(written);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.escaped(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.escaped(field, format_args!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own rendering (shortest round-trip digits; NaN and infinities as null).
        self.raw(field, format_args!("{}", serde_json::Value::from(value)));
    }
}
