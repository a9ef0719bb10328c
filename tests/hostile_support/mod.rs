//! The hostile-input suite's table runner (tests/hostile_*.rs): a case is bytes a broken or
//! malicious client sends by hand, from a given start, and the outcome nsqd v1.3.0 gives them
//! (its error code and text from `nsqd/protocol_v2.go`, or a close where nsqd closes
//! silently). Every read is bounded; a rule's mismatches are reported together, named.
#![allow(dead_code)] // each test binary uses its own part

use std::time::{Duration, Instant};

use crate::common::nsqclient::{tls_connector, RawClient};
use crate::common::wire::FrameType;
use crate::common::{Gate, Nsqd, Pki};
use serde_json::json;
use tokio_rustls::TlsConnector;

/// Longest wait for any one answer: far above a loaded machine's latency, and the bound that
/// turns a hang into a failure.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// nsqd's defaults, which the gate's upstream runs with here.
pub const NSQD_MAX_MSG_SIZE: usize = 1024 * 1024;
pub const NSQD_MAX_BODY_SIZE: usize = 5 * 1024 * 1024;
pub const NSQD_MAX_REQ_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// The most of an IDENTIFY body nsqgate reads before the client has an identity.
pub const IDENTIFY_BEFORE_IDENTITY: usize = 16 * 1024;

/// The topic [`Start::Closing`] subscribes to before its CLS.
pub const CLOSING_TOPIC: &str = "closing";

/// Where a case's bytes start.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// A fresh TCP connection, nothing sent.
    Bare,
    /// The magic sent, no IDENTIFY.
    Magic,
    /// Magic, IDENTIFY with TLS, the upgrade: the state every real client reaches.
    Upgraded,
    /// Upgraded, then `SUB closing ch` (OK) and `CLS` (CLOSE_WAIT): nsqd's closing state.
    Closing,
}

/// What the client sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// One error frame with this text ("E_CODE description"), then the close.
    Error(String),
    /// The close, with no frame.
    Close,
    /// These error frames in order (the ones before the last do not end the connection),
    /// then the close.
    Errors(Vec<String>),
}

pub struct Case {
    pub name: &'static str,
    pub start: Start,
    pub bytes: Vec<u8>,
    /// Whether the client then ends what it sends (a command cut short).
    pub then_end: bool,
    pub expect: Outcome,
}

pub fn case(name: &'static str, start: Start, bytes: impl Into<Vec<u8>>, expect: Outcome) -> Case {
    Case {
        name,
        start,
        bytes: bytes.into(),
        then_end: false,
        expect,
    }
}

/// A case whose client ends its side right after its bytes.
pub fn cut(name: &'static str, start: Start, bytes: impl Into<Vec<u8>>, expect: Outcome) -> Case {
    Case {
        then_end: true,
        ..case(name, start, bytes, expect)
    }
}

pub fn error(text: impl Into<String>) -> Outcome {
    Outcome::Error(text.into())
}

/// `line`, then a 4-byte big-endian size and `body` (size given apart: tests lie about it).
pub fn with_body(line: &[u8], size: i32, body: &[u8]) -> Vec<u8> {
    [line, &size.to_be_bytes(), body].concat()
}

/// An MPUB body: the count, then each message with its size.
pub fn mpub_body(count: i32, messages: &[&[u8]]) -> Vec<u8> {
    let mut body = count.to_be_bytes().to_vec();
    for message in messages {
        body.extend_from_slice(&(message.len() as i32).to_be_bytes());
        body.extend_from_slice(message);
    }
    body
}

/// nsqd in front of nsqgate (anonymous clients, TLS required) and a connector for its CA.
pub struct Setup {
    pub nsqd: Nsqd,
    pub gate: Gate,
    pub connector: TlsConnector,
    /// Last: dropped after the gate, whose log (in the PKI folder) a failure prints.
    pub pki: Pki,
}

pub fn setup() -> Setup {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    Setup {
        nsqd,
        gate,
        connector,
        pki,
    }
}

impl Setup {
    /// The test CA's certificate file.
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.pki.path("ca.pem")
    }

    pub async fn connect(&self, start: Start) -> RawClient {
        match start {
            Start::Bare => RawClient::plain_without_magic(self.gate.addr).await,
            Start::Magic => RawClient::plain(self.gate.addr).await,
            Start::Upgraded => {
                RawClient::upgraded(self.gate.addr, &self.connector, json!({}))
                    .await
                    .0
            }
            Start::Closing => {
                let (mut client, _) =
                    RawClient::upgraded(self.gate.addr, &self.connector, json!({})).await;
                let subscribed = client.sub(CLOSING_TOPIC, "ch").await;
                assert!(subscribed.is_some_and(|f| f.is_ok()), "SUB before CLS");
                client.send_raw(b"CLS\n").await;
                let closing = client.read_frame().await.map(|f| f.text());
                assert_eq!(closing.as_deref(), Some("CLOSE_WAIT"), "CLS");
                client
            }
        }
    }

    /// Runs every case; panics naming each one whose outcome was not the expected one.
    pub async fn run(&self, cases: &[Case]) {
        let mut wrong = Vec::new();
        for case in cases {
            let mut client = self.connect(case.start).await;
            client.send_raw(&case.bytes).await;
            if case.then_end {
                client.finish_sending().await;
            }
            let seen = match &case.expect {
                Outcome::Errors(texts) => errors(&mut client, texts.len()).await,
                _ => outcome(&mut client).await,
            };
            match seen {
                Ok(seen) if seen == case.expect => {}
                Ok(seen) => wrong.push(format!(
                    "{}: expected {:?}, got {seen:?}",
                    case.name, case.expect
                )),
                Err(problem) => wrong.push(format!("{}: {problem}", case.name)),
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    /// Nothing reached nsqd: no topic at all, and the gate's connections to it all gone.
    pub fn assert_nsqd_untouched(&self) {
        let topics = self.nsqd.stats()["topics"].clone();
        assert_eq!(topics, json!([]), "nsqd holds topics");
        self.assert_no_producer_left();
    }

    /// Nothing was published: every topic nsqd holds (a subscription may have made one) has
    /// no message, and no producer connection is left.
    pub fn assert_nothing_published(&self) {
        for topic in self.nsqd.stats()["topics"].as_array().into_iter().flatten() {
            assert_eq!(topic["message_count"], 0, "nsqd holds messages: {topic}");
        }
        self.assert_no_producer_left();
    }

    /// nsqd's /stats lists no producer connection once the cases' clients are gone (the gate
    /// closes its upstream leg when its client leaves; waited for, bounded).
    pub fn assert_no_producer_left(&self) {
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            let producers = self.nsqd.stats()["producers"].clone();
            let left = producers.as_array().map_or(0, Vec::len);
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nsqd still lists {left} producer connections: {producers}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The first non-heartbeat frame and then the close, or the close alone. An error frame must
/// be followed by the close (nsqd's errors here are all fatal); no answer at all is a hang.
pub async fn outcome(client: &mut RawClient) -> Result<Outcome, String> {
    match client.read_frame_within(ANSWER_LIMIT).await {
        Some(frame) if frame.frame_type == FrameType::Error => {
            if client.closed_within(ANSWER_LIMIT).await {
                Ok(Outcome::Error(frame.text()))
            } else {
                Err(format!("{} and the connection stayed open", frame.text()))
            }
        }
        Some(frame) => Err(format!("accepted: {:?} {}", frame.frame_type, frame.text())),
        None if client.closed_within(Duration::from_millis(10)).await => Ok(Outcome::Close),
        None => Err(format!("no answer and no close within {ANSWER_LIMIT:?}")),
    }
}

/// `count` error frames, the connection closed after the last; any other frame, or no close,
/// is the problem reported.
pub async fn errors(client: &mut RawClient, count: usize) -> Result<Outcome, String> {
    let mut texts = Vec::new();
    for _ in 0..count {
        match client.read_frame_within(ANSWER_LIMIT).await {
            Some(frame) if frame.frame_type == FrameType::Error => texts.push(frame.text()),
            Some(frame) => {
                return Err(format!(
                    "after {texts:?}: {:?} {}",
                    frame.frame_type,
                    frame.text()
                ))
            }
            None => return Err(format!("after {texts:?}: closed or silent")),
        }
    }
    if client.closed_within(ANSWER_LIMIT).await {
        Ok(Outcome::Errors(texts))
    } else {
        Err(format!("{texts:?} and the connection stayed open"))
    }
}
