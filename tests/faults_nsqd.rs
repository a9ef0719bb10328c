//! nsqd failing under publishers, with real processes: SIGKILLed mid-stream (TCP and HTTP
//! publishers, `--mem-queue-size=0` so every message nsqd takes goes to its disk queue) and
//! SIGSTOPped while producers keep sending. What must hold: a client is told `OK` only for a
//! message nsqd holds (compared body by body after nsqd restarts, read back through nsqgate);
//! clients see an error or a close, never a false `OK`; nsqgate serves the restarted nsqd
//! without being restarted; its memory stays bounded while nsqd does not read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod claims_support;
mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, FrameType};
use common::{GateConfig, Nsqd, Pki};

/// Every message nsqd takes goes to its disk queue (none in memory): a SIGKILL loses only what
/// nsqd never wrote. Its queue's metadata (read and write positions) is synced every 50 ms,
/// so some exists before the kill; what nsqd wrote after the last sync is past the recorded
/// write position, and go-diskqueue reads such a file to its end after a restart. (Without
/// any metadata a restarted queue starts over, writing on top of the unsynced messages:
/// nsqd's own loss, not what this test is about.)
const ON_DISK: [&str; 2] = ["--mem-queue-size=0", "--sync-timeout=50ms"];

/// What one publisher was told: the bodies acknowledged with `OK`, how many it sent, and how
/// its stream ended.
#[derive(Debug, Default)]
struct Told {
    acked: Vec<String>,
    sent: u64,
    end: String,
}

/// Publishes `tcp-N` bodies over one connection, eight in flight, until the connection ends.
/// Replies come in order, so the k-th reply answers the k-th PUB.
async fn tcp_publisher(
    gate: SocketAddr,
    connector: TlsConnector,
    topic: &str,
    progress: Arc<AtomicU64>,
) -> Told {
    let (mut client, _) = RawClient::upgraded(gate, &connector, json!({})).await;
    let mut told = Told::default();
    while told.sent < 1_000_000 {
        let batch: Vec<String> = (told.sent..told.sent + 8)
            .map(|n| format!("tcp-{n}"))
            .collect();
        for body in &batch {
            let body = Bytes::from(body.clone().into_bytes());
            client
                .send(&Command::Pub {
                    topic: topic.into(),
                    body,
                })
                .await;
        }
        told.sent += 8;
        for body in batch {
            match client.read_frame_within(Duration::from_secs(30)).await {
                Some(frame) if frame.is_ok() => {
                    told.acked.push(body);
                    progress.fetch_add(1, Ordering::SeqCst);
                }
                Some(frame) => {
                    assert_eq!(frame.frame_type, FrameType::Error, "{}", frame_text(&frame));
                    told.end = frame_text(&frame);
                    return told;
                }
                None => {
                    told.end = "closed".into();
                    return told;
                }
            }
        }
    }
    told.end = "nsqd never went away".into();
    told
}

/// `POST /pub` through nsqgate's nsqd front, one connection per request.
async fn http_publish(
    gate: SocketAddr,
    connector: &TlsConnector,
    topic: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let path = format!("/pub?topic={topic}");
    claims_support::https(gate, connector, "POST", &path, &[], body.as_bytes()).await
}

/// Publishes `http-N` bodies one request at a time until one is not answered `200 OK`.
async fn http_publisher(
    gate: SocketAddr,
    connector: TlsConnector,
    topic: &str,
    progress: Arc<AtomicU64>,
) -> Told {
    let mut told = Told::default();
    while told.sent < 100_000 {
        let body = format!("http-{}", told.sent);
        told.sent += 1;
        match http_publish(gate, &connector, topic, &body).await {
            Ok((200, text)) => {
                assert_eq!(text, "OK", "a 200 says OK");
                told.acked.push(body);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, text)) => {
                told.end = format!("{status} {text}");
                return told;
            }
            Err(e) => {
                told.end = format!("no answer: {e}");
                return told;
            }
        }
    }
    told.end = "nsqd never went away".into();
    told
}

/// Subscribes through nsqgate and reads `topic` until every body in `want` arrived (or nothing
/// more came for 10 s); the bodies read.
async fn read_back(
    gate: SocketAddr,
    connector: &TlsConnector,
    topic: &str,
    want: &BTreeSet<String>,
) -> BTreeSet<String> {
    let (mut consumer, _) = RawClient::upgraded(gate, connector, json!({})).await;
    let reply = consumer.sub(topic, "check").await.expect("SUB reply");
    assert!(reply.is_ok(), "SUB: {}", frame_text(&reply));
    consumer.send(&Command::Rdy { count: 1000 }).await;
    let mut got = BTreeSet::new();
    while !want.is_subset(&got) {
        let Some(frame) = consumer.read_frame_within(Duration::from_secs(10)).await else {
            break;
        };
        assert_eq!(
            frame.frame_type,
            FrameType::Message,
            "{}",
            frame_text(&frame)
        );
        let message = frame.message().expect("a message");
        consumer.send(&Command::Fin { id: message.id }).await;
        got.insert(String::from_utf8_lossy(&message.body).into_owned());
    }
    got
}

fn waits_for(progress: &[Arc<AtomicU64>], at_least: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress
        .iter()
        .zip(at_least)
        .any(|(p, want)| p.load(Ordering::SeqCst) < *want)
    {
        assert!(Instant::now() < deadline, "publishers made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_nsqd_mid_stream_loses_no_acknowledged_message() {
    let pki = Pki::new();
    let nsqd = Nsqd::start_with(&pki, "nsqd", &ON_DISK);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .http_nsqd(nsqd.https)
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let front = gate.http("nsqd");

    let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let tcp = tokio::spawn(tcp_publisher(
        gate.addr,
        connector.clone(),
        "durable",
        progress[0].clone(),
    ));
    let http = tokio::spawn(http_publisher(
        front,
        connector.clone(),
        "durable",
        progress[1].clone(),
    ));
    let killer = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            waits_for(&progress, &[500, 20]);
            nsqd.kill_keeping_data()
        })
    };
    let (tcp, http) = (tcp.await.unwrap(), http.await.unwrap());
    let killed = killer.join().expect("killer thread");
    eprintln!(
        "TCP: sent {}, acked {}, ended: {}",
        tcp.sent,
        tcp.acked.len(),
        tcp.end
    );
    eprintln!(
        "HTTP: sent {}, acked {}, ended: {}",
        http.sent,
        http.acked.len(),
        http.end
    );
    assert!(
        tcp.end == "closed" || tcp.end.starts_with("E_"),
        "{}",
        tcp.end
    );
    assert!(
        http.end.starts_with('5') || http.end.starts_with("no answer"),
        "{}",
        http.end
    );

    // nsqd back on the same addresses and data; nsqgate, never restarted, serves it again.
    let nsqd = Nsqd::restart(killed);
    let (mut after, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let ok = after
        .publish("durable", b"after-tcp")
        .await
        .expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    let (status, text) = http_publish(front, &connector, "durable", "after-http")
        .await
        .expect("an answer");
    assert_eq!((status, text.as_str()), (200, "OK"));

    let mut want: BTreeSet<String> = tcp.acked.iter().chain(&http.acked).cloned().collect();
    want.extend(["after-tcp".to_owned(), "after-http".to_owned()]);
    let got = read_back(gate.addr, &connector, "durable", &want).await;
    let lost: Vec<&String> = want.difference(&got).collect();
    assert!(lost.is_empty(), "acknowledged but not in nsqd: {lost:?}");
    let sent = tcp.sent + http.sent;
    eprintln!(
        "nsqd holds {} of {sent} sent; every one of the {} acknowledged",
        got.len(),
        want.len()
    );
    drop(nsqd);
}

/// The next frame in `buf` or from `io` (cancel safe: bytes read stay in `buf`); None when the
/// peer closed.
async fn next_frame<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut bytes::BytesMut,
) -> Option<common::wire::Frame> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(frame) = common::wire::decode_frame(buf, 1 << 20).expect("a frame") {
            return Some(frame);
        }
        if io.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// One producer connection, TLS from the first byte, split so that writing never waits for
/// replies: the writer sends PUBs of `size` bytes as fast as nsqgate takes them until `stop`,
/// counting them in `written`; the reader counts the `OK`s until every PUB is answered.
/// (written, acknowledged).
async fn flooding_producer(
    gate: SocketAddr,
    connector: TlsConnector,
    topic: &'static str,
    size: usize,
    written: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    use tokio::io::AsyncWriteExt;
    let tcp = TcpStream::connect(gate).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // No heartbeats: the reader half cannot answer them (nsqgate's idle limit, 65 s, is far
    // longer than the test).
    let identify = Command::Identify {
        body: br#"{"heartbeat_interval":-1}"#.to_vec().into(),
    };
    tls.write_all(common::wire::MAGIC_V2).await.unwrap();
    tls.write_all(&identify.to_bytes()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let reply = next_frame(&mut tls, &mut buf)
        .await
        .expect("IDENTIFY reply");
    assert_eq!(
        reply.frame_type,
        FrameType::Response,
        "{}",
        frame_text(&reply)
    );
    let (mut reader, mut writer) = tokio::io::split(tls);
    let mine = Arc::new(AtomicU64::new(0));
    let writing = {
        let mine = mine.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut body = format!("{topic}-{n}:").into_bytes();
                body.resize(size, b'.');
                let wire = Command::Pub {
                    topic: topic.into(),
                    body: body.into(),
                }
                .to_bytes();
                if writer.write_all(&wire).await.is_err() {
                    break;
                }
                n += 1;
                mine.fetch_add(1, Ordering::SeqCst);
                written.fetch_add(1, Ordering::SeqCst);
            }
            let _ = writer.flush().await;
            writer
        })
    };
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(writing.is_finished() && acked == mine.load(Ordering::SeqCst)) {
        assert!(
            Instant::now() < deadline,
            "{acked} of {} answered",
            mine.load(Ordering::SeqCst)
        );
        let frame = match tokio::time::timeout(
            Duration::from_millis(500),
            next_frame(&mut reader, &mut buf),
        )
        .await
        {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        assert!(frame.is_ok(), "{}", frame_text(&frame));
        acked += 1;
    }
    let _writer = writing.await.unwrap();
    (mine.load(Ordering::SeqCst), acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_nsqd_holds_producers_back_and_nsqgates_memory_stays_bounded() {
    const PRODUCERS: usize = 4;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let start_rss = claims_support::rss_kib(gate.pid());

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let topics = ["stop-a", "stop-b", "stop-c", "stop-d"];
    let producers: Vec<_> = topics[..PRODUCERS]
        .iter()
        .map(|topic| {
            tokio::spawn(flooding_producer(
                gate.addr,
                connector.clone(),
                topic,
                4096,
                written.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Every producer through to nsqd first: a connection nsqgate has yet to open to a stopped
    // nsqd is refused (E_IDENTIFY_FAILED), which is not what this test is about.
    let deadline = Instant::now() + Duration::from_secs(60);
    while topics[..PRODUCERS]
        .iter()
        .any(|t| nsqd.message_count(t) < 200)
    {
        assert!(
            Instant::now() < deadline,
            "the producers are not getting through"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // nsqd frozen for 10 s while the producers keep writing; nsqgate's memory sampled.
    let pid = gate.pid();
    let before = claims_support::rss_kib(pid);
    let written_before = written.load(Ordering::SeqCst);
    nsqd.signal("STOP");
    let mut peak = before;
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(claims_support::rss_kib(pid));
    }
    let written_frozen = written.load(Ordering::SeqCst) - written_before;
    nsqd.signal("CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut totals = (0, 0);
    for producer in producers {
        let (sent, acked) = producer.await.unwrap();
        totals = (totals.0 + sent, totals.1 + acked);
    }
    let held: u64 = topics[..PRODUCERS]
        .iter()
        .map(|t| nsqd.message_count(t))
        .sum();
    eprintln!(
        "nsqgate RSS: {start_rss} KiB at start, {before} KiB as nsqd stopped, peak {peak} KiB \
         while stopped (+{} KiB); {written_frozen} PUBs of 4 KiB written while stopped; \
         sent {}, acknowledged {}, nsqd holds {held}",
        peak - before,
        totals.0,
        totals.1
    );
    assert_eq!(totals.1, totals.0, "every PUB answered OK after SIGCONT");
    assert_eq!(held, totals.1, "every acknowledged message is in nsqd");
    assert!(
        peak - before < 64 * 1024,
        "nsqgate grew {} KiB while nsqd was stopped",
        peak - before
    );
}
