//! IDENTIFY bodies read as Go's encoding/json reads them, judged as nsqd v1.3.0 judges them.

use crate::nsq::{ErrorCode, IdentifyData, IdentifyRanges, IdentifyRefusal};

fn parse(body: &str) -> Result<IdentifyData, IdentifyRefusal> {
    IdentifyData::parse(body.as_bytes())
}

fn refusal(body: &str) -> String {
    let data = parse(body).unwrap();
    let refusal = data.check(&IdentifyRanges::default()).unwrap_err();
    format!("{} {refusal}", refusal.code())
}

#[test]
fn reads_like_go() {
    let data =
        parse(r#"{"Client_ID":"a","client_id":"b","HEARTBEAT_INTERVAL":5000,"x":[1,{}]}"#).unwrap();
    assert_eq!(data.client_id, "b", "the last key wins, case-insensitively");
    assert_eq!(data.heartbeat_interval, 5000);
    // Go's folding: the long s matches "s".
    assert!(parse("{\"\u{17F}napp\u{79}\":true}").unwrap().snappy);
    // null leaves a field alone, also after a value.
    let data = parse(r#"{"msg_timeout":2000,"msg_timeout":null,"tls_v1":null}"#).unwrap();
    assert_eq!(data.msg_timeout, 2000);
    assert_eq!(parse("null").unwrap(), IdentifyData::default());
    assert_eq!(parse(" {} ").unwrap(), IdentifyData::default());
}

#[test]
fn wrong_types_fail_the_whole_body() {
    for body in [
        "[1]",
        "5",
        "\"x\"",
        "{",
        "{} x",
        r#"{"tls_v1":"yes"}"#,
        r#"{"msg_timeout":1.5}"#,
        r#"{"msg_timeout":1e3}"#,
        r#"{"msg_timeout":"1000"}"#,
        r#"{"heartbeat_interval":9223372036854775808}"#,
        r#"{"sample_rate":2147483648}"#,
        r#"{"client_id":5}"#,
        r#"{"deflate_level":true}"#,
        r#"{"client_id":5,"client_id":"a"}"#,
    ] {
        assert_eq!(parse(body), Err(IdentifyRefusal::Json), "{body}");
    }
    assert_eq!(
        IdentifyRefusal::Json.to_string(),
        "IDENTIFY failed to decode JSON body"
    );
    // Unknown keys may hold anything; invalid UTF-8 inside a string is kept.
    assert!(parse(r#"{"long_id":1.5,"short_id":[]}"#).is_ok());
    assert!(IdentifyData::parse(b"{\"client_id\":\"\xff\"}").is_ok());
}

#[test]
fn ranges_in_nsqds_order_with_its_texts() {
    let r = refusal;
    assert_eq!(
        r(r#"{"heartbeat_interval":100}"#),
        "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
    );
    assert_eq!(
        r(r#"{"heartbeat_interval":60001}"#),
        "E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid"
    );
    assert_eq!(
        r(r#"{"heartbeat_interval":-2}"#),
        "E_BAD_BODY IDENTIFY heartbeat interval (-2) is invalid"
    );
    assert_eq!(
        r(r#"{"output_buffer_timeout":24,"output_buffer_size":1}"#),
        "E_BAD_BODY IDENTIFY output buffer timeout (24) is invalid"
    );
    assert_eq!(
        r(r#"{"output_buffer_size":63}"#),
        "E_BAD_BODY IDENTIFY output buffer size (63) is invalid"
    );
    assert_eq!(
        r(r#"{"sample_rate":100,"msg_timeout":1}"#),
        "E_BAD_BODY IDENTIFY sample rate (100) is invalid"
    );
    assert_eq!(
        r(r#"{"msg_timeout":900001}"#),
        "E_BAD_BODY IDENTIFY msg timeout (900001) is invalid"
    );
    let ok = [
        r#"{"heartbeat_interval":-1,"output_buffer_timeout":-1,"output_buffer_size":-1}"#,
        r#"{"heartbeat_interval":60000,"output_buffer_timeout":25,"output_buffer_size":65536}"#,
        r#"{"sample_rate":99,"msg_timeout":1000,"deflate_level":-7}"#,
    ];
    for body in ok {
        assert_eq!(
            parse(body).unwrap().check(&IdentifyRanges::default()),
            Ok(())
        );
    }
    // Another nsqd's flags move the bounds.
    let wide = IdentifyRanges {
        max_heartbeat_interval_ms: 120_000,
        ..IdentifyRanges::default()
    };
    let data = parse(r#"{"heartbeat_interval":90000}"#).unwrap();
    assert!(data.check(&IdentifyRanges::default()).is_err());
    assert_eq!(data.check(&wide), Ok(()));
}

#[test]
fn both_compressions_only_when_negotiated_and_offered() {
    let both = parse(r#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#).unwrap();
    let refusal = both
        .check_compression(&IdentifyRanges::default())
        .unwrap_err();
    assert_eq!(refusal.code(), ErrorCode::IdentifyFailed);
    assert_eq!(
        refusal.to_string(),
        "cannot enable both deflate and snappy compression"
    );
    let no_snappy = IdentifyRanges {
        snappy: false,
        ..IdentifyRanges::default()
    };
    assert_eq!(both.check_compression(&no_snappy), Ok(()));
    let plain = parse(r#"{"snappy":true,"deflate":true}"#).unwrap();
    assert_eq!(plain.check_compression(&IdentifyRanges::default()), Ok(()));
}
