use super::*;

fn own() -> Metadata {
    Metadata::own("gatehost")
}

#[test]
fn relays_settings_and_decides_tls_per_leg() {
    let body = br#"{"client_id":"c","hostname":"h","heartbeat_interval":5000,"tls_v1":true,
        "feature_negotiation":true,"snappy":true,"deflate_level":3,"long_id":"x"}"#;
    let identify = ClientIdentify::parse(body).unwrap();
    assert!(identify.tls_v1 && identify.feature_negotiation);
    let sent = identify.upstream(true, &own(), false);
    let up: Value = serde_json::from_slice(&sent.first).unwrap();
    assert_eq!(up["heartbeat_interval"], 5000);
    assert_eq!(up["tls_v1"], true);
    assert_eq!(up["snappy"], false);
    assert!(up.get("long_id").is_none());
    assert!(sent.after_tls.is_none());
}

#[test]
fn only_nsqgates_metadata_crosses_before_verification() {
    let body = br#"{"client_id":"c","hostname":"h","user_agent":"u","sample_rate":7,
        "output_buffer_size":128}"#;
    let identify = ClientIdentify::parse(body).unwrap();
    let sent = identify.upstream(true, &own(), false);
    let first: Value = serde_json::from_slice(&sent.first).unwrap();
    assert_eq!(first["client_id"], "nsqgate");
    assert_eq!(first["hostname"], "gatehost");
    assert!(first["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("nsqgate/"));
    // Forwarded: still nsqgate's in clear, the client's after TLS (no buffer size there).
    let sent = identify.upstream(true, &own(), true);
    let first: Value = serde_json::from_slice(&sent.first).unwrap();
    assert_eq!(first["client_id"], "nsqgate");
    assert_eq!(first["output_buffer_size"], 128);
    let second: Value = serde_json::from_slice(&sent.after_tls.unwrap()).unwrap();
    assert_eq!(second["client_id"], "c");
    assert_eq!(second["user_agent"], "u");
    assert_eq!(second["sample_rate"], 7);
    assert!(second.get("output_buffer_size").is_none());
    assert!(second.get("feature_negotiation").is_none());
    // Without upstream TLS nothing is verified anyway: one IDENTIFY, the client's values.
    let sent = identify.upstream(false, &own(), true);
    let first: Value = serde_json::from_slice(&sent.first).unwrap();
    assert_eq!(first["hostname"], "h");
    assert!(sent.after_tls.is_none());
}

#[test]
fn heartbeat_interval_as_nsqd_reads_it() {
    let hb = |body: &[u8]| ClientIdentify::parse(body).unwrap().heartbeat_interval();
    assert_eq!(hb(b"{}"), Some(DEFAULT_HEARTBEAT));
    assert_eq!(hb(br#"{"heartbeat_interval":0}"#), Some(DEFAULT_HEARTBEAT));
    assert_eq!(
        hb(br#"{"heartbeat_interval":5000}"#),
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(hb(br#"{"heartbeat_interval":-1}"#), None);
}

#[test]
fn expected_reply_takes_the_clients_choices_over_nsqds_defaults() {
    let defaults: Map<String, Value> =
        serde_json::from_str(r#"{"max_rdy_count":2500,"msg_timeout":60000,"sample_rate":0}"#)
            .unwrap();
    let identify = ClientIdentify::parse(br#"{"msg_timeout":30000,"sample_rate":0}"#).unwrap();
    let reply = identify.expected_reply(&defaults);
    assert_eq!(reply["msg_timeout"], 30000);
    assert_eq!(reply["max_rdy_count"], 2500);
    assert_eq!(reply["sample_rate"], 0);
}

#[test]
fn expected_reply_reports_what_nsqd_sets() {
    let defaults: Map<String, Value> = serde_json::from_str(
        r#"{"output_buffer_size":16384,"output_buffer_timeout":250,"sample_rate":0}"#,
    )
    .unwrap();
    let reply = |body: &[u8]| {
        ClientIdentify::parse(body)
            .unwrap()
            .expected_reply(&defaults)
    };
    let r = reply(br#"{"output_buffer_size":-1,"output_buffer_timeout":100}"#);
    assert_eq!(
        (&r["output_buffer_size"], &r["output_buffer_timeout"]),
        (&1.into(), &0.into())
    );
    let r = reply(br#"{"output_buffer_timeout":-1}"#);
    assert_eq!(
        (&r["output_buffer_size"], &r["output_buffer_timeout"]),
        (&16384.into(), &0.into())
    );
    assert_eq!(reply(br#"{"sample_rate":12}"#)["sample_rate"], 12);
}

#[test]
fn reply_describes_the_client_leg() {
    let nsqd: Map<String, Value> = serde_json::from_str(
        r#"{"max_rdy_count":2500,"tls_v1":true,"snappy":true,"auth_required":true}"#,
    )
    .unwrap();
    let leg = ClientLeg {
        tls_v1: false,
        auth_required: false,
        compression: None,
        deflate_level: 6,
    };
    let reply: Value = serde_json::from_slice(&client_reply(&nsqd, leg)).unwrap();
    assert_eq!(reply["max_rdy_count"], 2500);
    assert_eq!(reply["tls_v1"], false);
    assert_eq!(reply["snappy"], false);
    assert_eq!(reply["auth_required"], false);
    let deflate = ClientLeg {
        compression: Some(Compression::Deflate { level: 3 }),
        deflate_level: 3,
        ..leg
    };
    let reply: Value = serde_json::from_slice(&client_reply(&nsqd, deflate)).unwrap();
    assert_eq!(
        (&reply["deflate"], &reply["snappy"]),
        (&true.into(), &false.into())
    );
    assert_eq!(reply["deflate_level"], 3);
}

/// nsqd's choice (protocolV2.IDENTIFY): only with feature negotiation, only what it offers,
/// the client's level or 6, capped at its --max-deflate-level.
#[test]
fn compression_is_chosen_as_nsqd_chooses() {
    let offers = IdentifyRanges::default();
    let max_4: Map<String, Value> = serde_json::from_str(r#"{"max_deflate_level":4}"#).unwrap();
    let choose = |body: &str, ranges: &IdentifyRanges, reply: &Map<String, Value>| {
        ClientIdentify::parse(body.as_bytes())
            .unwrap()
            .compression(ranges, reply)
    };
    let deflate = |level| Some(Compression::Deflate { level });
    let none = Map::new();
    for (body, expected) in [
        (r#"{"snappy":true}"#, (None, 6)),
        (r#"{"feature_negotiation":true}"#, (None, 6)),
        (
            r#"{"feature_negotiation":true,"snappy":true}"#,
            (Some(Compression::Snappy), 6),
        ),
        (
            r#"{"feature_negotiation":true,"deflate":true}"#,
            (deflate(6), 6),
        ),
        (
            r#"{"feature_negotiation":true,"deflate":true,"deflate_level":2}"#,
            (deflate(2), 2),
        ),
        (
            r#"{"feature_negotiation":true,"deflate":true,"deflate_level":-3}"#,
            (deflate(6), 6),
        ),
        (
            r#"{"feature_negotiation":true,"deflate_level":2}"#,
            (None, 6),
        ),
    ] {
        assert_eq!(choose(body, &offers, &none), expected, "{body}");
    }
    let capped = choose(
        r#"{"feature_negotiation":true,"deflate":true,"deflate_level":9}"#,
        &offers,
        &max_4,
    );
    assert_eq!(capped, (deflate(4), 4));
    // nsqd states the capped default even when DEFLATE is not chosen.
    assert_eq!(
        choose(r#"{"feature_negotiation":true}"#, &offers, &max_4),
        (None, 4)
    );
    let no_snappy = IdentifyRanges {
        snappy: false,
        ..offers
    };
    let asked = r#"{"feature_negotiation":true,"snappy":true}"#;
    assert_eq!(choose(asked, &no_snappy, &none), (None, 6));
}
