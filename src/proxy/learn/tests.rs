#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn operator_over_nsqd_over_defaults() {
    let reply: Map<String, Value> = serde_json::from_str(r#"{"max_msg_timeout":120000}"#).unwrap();
    let told = Told {
        max_heartbeat_interval_ns: Some(90_000_000_000),
        min_output_buffer_timeout_ns: Some(10_500_000),
        snappy: Some(false),
        ..Told::default()
    };
    let options = NsqdOptions {
        max_heartbeat_interval_ms: Some(45_000),
        ..NsqdOptions::default()
    };
    let r = ranges(&reply, &told, &options);
    assert_eq!(r.max_heartbeat_interval_ms, 45_000);
    assert_eq!(r.min_output_buffer_timeout_ms, 10);
    assert_eq!(r.max_msg_timeout_ms, 120_000);
    assert!(!r.snappy && r.deflate);
    assert_eq!(r.max_output_buffer_size, 64 * 1024);
    let none = ranges(&Map::new(), &Told::default(), &NsqdOptions::default());
    assert_eq!(none, IdentifyRanges::default());
}
