//! Snappy and DEFLATE on the client leg (issue 11): negotiated as nsqd v1.3.0 negotiates them,
//! with nsqd's leg uncompressed. Stock go-nsq tools and pynsq publish and consume through
//! nsqgate with each; a raw client builds its own compressed streams (the `snap` and `flate2`
//! crates' stream types, not nsqgate's codec) and checks the bytes on the wire; corrupt
//! streams and decompression bombs end in a closed connection, never in a panic or in memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
#[path = "compression_support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::time::Duration;

use common::wire::{self, Command};
use common::{run_client, run_tool, tool, Gate, GateConfig, Nsqd, Pki};
use support::{
    identify_reply, nsqd_clients, plain_gate, rss_kib, wait_log, Compressed, SNAPPY_STREAM_START,
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The IDENTIFY reply's compression fields, from nsqd itself and from nsqgate, for the same
/// bodies: nsqgate answers in nsqd's place with nsqd's words (and its --max-deflate-level).
#[test]
fn identify_compression_fields_match_nsqd() {
    let pki = Pki::new();
    let nsqd = Nsqd::start_with(&pki, "nsqd", &["--max-deflate-level=4"]);
    let gate = plain_gate(&pki, &nsqd);
    let bodies = [
        serde_json::json!({"feature_negotiation": true, "snappy": true}),
        serde_json::json!({"feature_negotiation": true, "deflate": true, "deflate_level": 9}),
        serde_json::json!({"feature_negotiation": true, "deflate": true, "deflate_level": 2}),
        serde_json::json!({"feature_negotiation": true, "deflate": true}),
        serde_json::json!({"feature_negotiation": true}),
    ];
    let fields = ["snappy", "deflate", "deflate_level", "max_deflate_level"];
    for body in bodies {
        let from_nsqd = identify_reply(nsqd.tcp, &body);
        let from_gate = identify_reply(gate.addr, &body);
        for field in fields {
            assert_eq!(from_gate[field], from_nsqd[field], "{field} for {body}");
        }
    }
    // Both at once: nsqd's fatal error, word for word, and nothing compressed follows.
    let both = serde_json::json!({"feature_negotiation": true, "snappy": true, "deflate": true});
    for addr in [nsqd.tcp, gate.addr] {
        let reply = identify_reply(addr, &both);
        assert_eq!(
            reply["error"], "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression",
            "{addr}"
        );
    }
}

/// Snappy by hand: the reply in clear, then the stream identifier and an `OK` in snappy's
/// framing; PUB and SUB through it; nsqd's own connection shows no compression.
#[test]
fn raw_client_publishes_and_consumes_over_snappy() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let (mut client, reply) = Compressed::snappy(gate.addr);
    assert_eq!(reply["snappy"], true, "{reply}");
    assert_eq!(reply["deflate"], false, "{reply}");
    assert_eq!(&client.first_bytes[..], SNAPPY_STREAM_START);
    round_trip(&mut client, "snappy-raw", &nsqd);
}

/// DEFLATE by hand at level 9: the reply states nsqd's cap (6), and a stream compressed at 9
/// reads back all the same (the level is the writer's business).
#[test]
fn raw_client_publishes_and_consumes_over_deflate() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let (mut client, reply) = Compressed::deflate(gate.addr, 9);
    assert_eq!(reply["deflate"], true, "{reply}");
    assert_eq!(reply["deflate_level"], 6, "{reply}");
    assert_eq!(reply["snappy"], false, "{reply}");
    round_trip(&mut client, "deflate-raw", &nsqd);
}

fn round_trip(client: &mut Compressed, topic: &str, nsqd: &Nsqd) {
    let body: Vec<u8> = b"compressible ".repeat(500);
    client.send(&wire::pub_bytes(topic, &body));
    assert!(client.read_frame().is_ok(), "PUB through compression");
    client.send(
        &Command::Sub {
            topic: topic.into(),
            channel: "ch".into(),
        }
        .to_bytes(),
    );
    assert!(client.read_frame().is_ok(), "SUB");
    client.send(&Command::Rdy { count: 1 }.to_bytes());
    let frame = client.read_frame();
    let message = frame.message().expect("a message");
    assert_eq!(message.body, body, "the body came back intact");
    assert_eq!(nsqd.message_count(topic), 1);
    // nsqd's side of nsqgate's connection is uncompressed.
    for conn in nsqd_clients(nsqd, topic) {
        assert_eq!(conn["snappy"], false, "{conn}");
        assert_eq!(conn["deflate"], false, "{conn}");
    }
}

/// Garbage where compressed data belongs: the connection closes (nsqd says nothing either),
/// the ending is the client's protocol error, and nsqgate goes on serving.
#[test]
fn corrupt_compressed_streams_close_the_connection() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let garbage: [(&str, Vec<u8>); 4] = [
        // A data chunk whose checksum is wrong.
        (
            "snappy",
            [
                SNAPPY_STREAM_START,
                b"\x01\x09\x00\x00\x00\x00\x00\x00NOP\n\x00",
            ]
            .concat(),
        ),
        // A reserved, unskippable chunk type.
        (
            "snappy",
            [SNAPPY_STREAM_START, b"\x02\x01\x00\x00x"].concat(),
        ),
        // A chunk declaring 16 MiB, over Go's limit: refused before it is waited for.
        (
            "snappy",
            [SNAPPY_STREAM_START, b"\x00\xff\xff\xff"].concat(),
        ),
        // DEFLATE block type 3 does not exist.
        ("deflate", vec![0x07, 0xff, 0xff, 0xff]),
    ];
    for (compression, bytes) in garbage {
        let (mut client, _) = Compressed::open(gate.addr, compression, 6);
        client.send_raw(&bytes);
        assert!(
            client.closed_within(Duration::from_secs(10)),
            "{compression}"
        );
    }
    for cause in [
        "snappy checksum mismatch",
        "cannot be skipped",
        "over the 76494-byte limit",
        "corrupt deflate stream",
    ] {
        let log = wait_log(&gate, cause);
        let ending = log
            .lines()
            .find(|line| line.contains(cause))
            .unwrap_or_default();
        assert!(ending.contains("kind=\"client_protocol\""), "{ending}");
    }
    let (mut client, _) = Compressed::snappy(gate.addr);
    client.send(&Command::Nop.to_bytes());
    client.send(&wire::pub_bytes("after-garbage", b"still serving"));
    assert!(client.read_frame().is_ok(), "a new connection still works");
}

/// 256 MiB of one byte value compresses to about 256 KiB: nsqgate inflates only what its
/// command buffer has room for, refuses the line as too long (closing as nsqd does), and its
/// memory hardly moves.
#[test]
fn a_decompression_bomb_is_refused_within_bounded_memory() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let before = rss_kib(gate.pid());
    let (mut client, _) = Compressed::deflate(gate.addr, 6);
    let mut bomb = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b'A'; 1024 * 1024];
    for _ in 0..256 {
        bomb.write_all(&block).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    client.send_raw(&bomb);
    // A line over the limit: nsqd closes without a word, and so does nsqgate.
    assert!(client.closed_within(Duration::from_secs(10)));
    wait_log(&gate, "command line longer than");
    let grown = rss_kib(gate.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "nsqgate grew by {grown} KiB on a 256 MiB bomb"
    );
}

/// A PUB whose declared size is over the message limit, compressed to a few bytes: refused
/// from its header, as uncompressed, before any body is inflated.
#[test]
fn a_compressed_oversized_publish_is_refused_from_its_header() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let (mut client, _) = Compressed::snappy(gate.addr);
    let mut command = b"PUB big\n".to_vec();
    command.extend_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
    command.extend_from_slice(&[0; 1024]);
    client.send(&command);
    let frame = client.read_frame();
    assert_eq!(
        frame.error_code().as_deref(),
        Some("E_BAD_MESSAGE"),
        "{}",
        frame.text()
    );
    assert!(!nsqd.topic_exists("big"));
}

fn compression_opts(flag: &str, pki: &Pki, compression: &str) -> Vec<String> {
    let mut opts = vec![
        format!("--{flag}=tls_v1,true"),
        format!("--{flag}=tls_root_ca_file,{}", pki.path("ca.pem").display()),
    ];
    match compression {
        "snappy" => opts.push(format!("--{flag}=snappy,true")),
        _ => {
            opts.push(format!("--{flag}=deflate,true"));
            opts.push(format!("--{flag}=deflate_level,6"));
        }
    }
    opts
}

/// go-nsq's to_nsq and nsq_tail, with TLS and then each compression (two `OK`s: inside TLS,
/// then inside TLS and compression), every byte back and counted in nsqd's /stats.
#[test]
fn stock_tools_publish_and_consume_with_each_compression() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    for compression in ["snappy", "deflate"] {
        let topic = format!("tools-{compression}");
        let bodies: Vec<String> = (0..200)
            .map(|i| format!("{compression} message {i} ").repeat(1 + i % 40))
            .collect();
        let stdin = bodies.join("\n") + "\n";
        let mut args = vec![
            format!("--topic={topic}"),
            format!("--nsqd-tcp-address={}", gate.addr),
        ];
        args.extend(compression_opts("producer-opt", &pki, compression));
        let (ok, _, stderr) = run_tool(&tool("to_nsq"), &args, stdin.as_bytes(), CLIENT_TIMEOUT);
        assert!(ok, "to_nsq with {compression} failed: {stderr}");
        let upgraded = format!("upgrading to {}", upgrade_name(compression));
        assert!(
            stderr.contains(&upgraded),
            "to_nsq did not compress: {stderr}"
        );
        assert_eq!(nsqd.message_count(&topic), bodies.len() as u64);

        let mut args = vec![
            format!("--topic={topic}"),
            "--channel=tail".to_string(),
            format!("--nsqd-tcp-address={}", gate.addr),
            format!("-n={}", bodies.len()),
        ];
        args.extend(compression_opts("consumer-opt", &pki, compression));
        let (ok, stdout, stderr) = run_tool(&tool("nsq_tail"), &args, b"", CLIENT_TIMEOUT);
        assert!(ok, "nsq_tail with {compression} failed: {stderr}");
        assert!(
            stderr.contains(&upgraded),
            "nsq_tail did not compress: {stderr}"
        );
        let mut received: Vec<&str> = std::str::from_utf8(&stdout).unwrap().lines().collect();
        let mut expected: Vec<&str> = bodies.iter().map(String::as_str).collect();
        received.sort_unstable();
        expected.sort_unstable();
        assert!(received == expected, "{compression}: bodies differ");
        let channel = &nsqd.topic(&topic).unwrap()["channels"][0];
        assert_eq!(channel["message_count"], bodies.len(), "{channel}");
    }
}

fn upgrade_name(compression: &str) -> &'static str {
    match compression {
        "snappy" => "Snappy",
        _ => "Deflate",
    }
}

/// pynsq with its `snappy` and `deflate` options (python-snappy and zlib), over TLS.
#[test]
fn pynsq_publishes_and_consumes_with_each_compression() {
    let snappy = common::clients_dir().join(".venv/bin/python");
    let has_snappy = std::process::Command::new(&snappy)
        .args(["-c", "import snappy"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_snappy,
        "python-snappy is missing from {}: run scripts/install-clients (tests/clients/requirements.txt pins it)",
        snappy.display()
    );
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    for (compression, flags) in [
        ("snappy", vec!["--snappy"]),
        ("deflate", vec!["--deflate", "--deflate-level=3"]),
    ] {
        let topic = format!("pynsq-{compression}");
        let mut args = vec![
            format!("--address={}", gate.addr),
            format!("--topic={topic}"),
            "--channel=ch".into(),
            "--count=100".into(),
            format!("--ca={}", pki.path("ca.pem").display()),
            "--mpub-batch=10".into(),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let (ok, summary, stderr) =
            run_client("python", "pynsq_roundtrip.py", &args, CLIENT_TIMEOUT);
        assert!(ok, "pynsq with {compression} failed: {summary}\n{stderr}");
        assert_eq!(summary["received"], 100, "{summary}");
        assert_eq!(
            summary["compression"],
            serde_json::json!([compression, compression]),
            "{summary}"
        );
        assert_eq!(nsqd.message_count(&topic), 100);
    }
}

/// nsqgate's own reply says what the client leg does, for a client that asked for nothing.
#[test]
fn no_compression_unless_asked() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let mut client = std::net::TcpStream::connect(gate.addr).unwrap();
    client.write_all(wire::MAGIC_V2).unwrap();
    let body = serde_json::json!({"feature_negotiation": true}).to_string();
    client
        .write_all(&Command::Identify { body: body.into() }.to_bytes())
        .unwrap();
    client.write_all(&wire::pub_bytes("plain", b"x")).unwrap();
    let mut got = vec![0; 4096];
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    while !seen.windows(2).any(|w| w == b"OK") {
        let n = client.read(&mut got).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&got[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("\"snappy\":false") && text.contains("\"deflate\":false"),
        "{text}"
    );
}

/// Compressed commands sent right behind IDENTIFY, before its reply (nsqd would lose them):
/// nsqgate decodes them as the stream's first bytes.
#[test]
fn compressed_bytes_pipelined_behind_identify_are_kept() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = plain_gate(&pki, &nsqd);
    let mut pipelined = snap::write::FrameEncoder::new(Vec::new());
    pipelined
        .write_all(&wire::pub_bytes("pipelined", b"sent early"))
        .unwrap();
    let pipelined = pipelined.into_inner().unwrap();
    let (mut client, _) = Compressed::open_pipelining(gate.addr, &pipelined);
    assert!(client.read_frame().is_ok(), "the pipelined PUB's OK");
    assert_eq!(nsqd.message_count("pipelined"), 1);
}

/// A client without an identity is charged for its codec: with the shared budget below
/// snappy's 192 KiB, asking for it is refused in nsqd's IDENTIFY words.
#[test]
fn compression_is_charged_to_the_unauthenticated_budget() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .client("require_tls = false")
        .policy("open-policy")
        .table("[limits]\nmax_unauthenticated_memory = 131072")
        .start(&pki);
    let body = serde_json::json!({"feature_negotiation": true, "snappy": true});
    let reply = identify_reply(gate.addr, &body);
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("E_IDENTIFY_FAILED IDENTIFY failed") && error.contains("budget"),
        "{reply}"
    );
    let plain = identify_reply(gate.addr, &serde_json::json!({"feature_negotiation": true}));
    assert_eq!(
        plain["snappy"], false,
        "without compression it fits: {plain}"
    );
}
