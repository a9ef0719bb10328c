use std::fmt::Write;

use serde_json::{Map, Value};

use super::{JsonObject, JsonString};
use crate::logging::escape::{escape, Escaping};

/// `text` as the inside of a JSON string, written by [`JsonString`].
fn inside(text: &str) -> String {
    let mut out = String::new();
    JsonString(&mut out).write_str(text).unwrap();
    out
}

/// `text` as serde_json writes it, without the quotes.
fn serde_inside(text: &str) -> String {
    let json = serde_json::to_string(text).unwrap();
    json[1..json.len() - 1].to_owned()
}

#[test]
fn every_character_is_escaped_as_serde_json_escapes_it() {
    for c in (0..=0x10ffff).filter_map(char::from_u32) {
        let text = c.to_string();
        assert_eq!(inside(&text), serde_inside(&text), "U+{:04X}", u32::from(c));
    }
}

#[test]
fn a_hostile_value_is_written_as_serde_json_wrote_it() {
    let hostile = "a \"quoted\" \\ path\n\r\t\u{8}\u{c}\0\u{1b}[2J\u{7f}\u{9b}é 東京 \u{202e}🦀\"";
    // Bare, as the keys, the target and the span are written.
    assert_eq!(inside(hostile), serde_inside(hostile));
    // After the log's own escaping, as every field value is written.
    let mut object = JsonObject::default();
    object
        .string("value", |out| Escaping::new(out).write_str(hostile))
        .unwrap();
    let mut line = String::new();
    object.write_to(&mut line).unwrap();
    let mut map = Map::new();
    map.insert("value".into(), escape(hostile).into());
    assert_eq!(line, Value::Object(map).to_string());
}

#[test]
fn fields_are_written_in_key_order_the_last_of_a_key_winning() {
    let mut object = JsonObject::default();
    let mut map = Map::new();
    let fields: [(&'static str, Value); 8] = [
        ("timestamp", "2026-12-04T00:00:00.000001Z".into()),
        ("level", "INFO".into()),
        ("remote", "127.0.0.1:4150".into()),
        ("level", "shadowed".into()),
        ("repeats", 0u64.into()),
        ("Z", (-3i64).into()),
        ("action", true.into()),
        ("r\"ate", Value::from(0.1f64 + 0.2)),
    ];
    for (key, value) in fields {
        match &value {
            Value::String(text) => object.string(key, |out| out.write_str(text)),
            other => object.raw(key, format_args!("{other}")),
        }
        .unwrap();
        map.insert(key.into(), value);
    }
    let mut line = String::new();
    object.write_to(&mut line).unwrap();
    assert_eq!(line, Value::Object(map).to_string());
}

#[test]
fn an_object_without_fields_is_empty_braces() {
    let mut line = String::new();
    JsonObject::default().write_to(&mut line).unwrap();
    assert_eq!(line, "{}");
}
