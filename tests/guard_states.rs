//! nsqd's state rules through nsqgate: each command sent in a state nsqd refuses it in gets,
//! through nsqgate, exactly the frame nsqd itself sends (asked of a real nsqd directly, then of
//! nsqgate in front of it), and the connection closes as nsqd closes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, MessageId};
use common::{Gate, Nsqd, Pki};

fn id() -> MessageId {
    MessageId(*b"0123456789abcdef")
}

/// Sends `before` (each answered OK or CLOSE_WAIT), then `probe`; what comes back for
/// the probe, and whether the connection closed after it.
async fn probe(
    pki: &Pki,
    addr: SocketAddr,
    before: &[Command],
    probe: &Command,
) -> (Option<String>, bool) {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(addr, &connector, json!({})).await;
    for command in before {
        client.send(command).await;
        if command.expects_reply() {
            let reply = client.read_frame().await.map(|f| frame_text(&f));
            let want = if matches!(command, Command::Cls) {
                "CLOSE_WAIT"
            } else {
                "OK"
            };
            assert_eq!(reply.as_deref(), Some(want), "{} at {addr}", command.name());
        }
    }
    client.send(probe).await;
    let reply = client.read_frame().await.map(|f| frame_text(&f));
    let closed = client.closed_within(Duration::from_secs(5)).await;
    (reply, closed)
}

#[tokio::test]
async fn commands_out_of_state_get_nsqds_own_answer_through_nsqgate() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let sub = |channel: &str| Command::Sub {
        topic: "states".into(),
        channel: channel.into(),
    };
    let cases: Vec<(&str, Vec<Command>, Command)> = vec![
        (
            "AUTH after SUB",
            vec![sub("a")],
            Command::Auth {
                secret: b"secret".to_vec().into(),
            },
        ),
        ("SUB after SUB", vec![sub("b")], sub("c")),
        (
            "IDENTIFY after SUB",
            vec![sub("d")],
            Command::Identify {
                body: b"{}".to_vec().into(),
            },
        ),
        ("RDY before SUB", vec![], Command::Rdy { count: 1 }),
        ("FIN before SUB", vec![], Command::Fin { id: id() }),
        (
            "REQ before SUB",
            vec![],
            Command::Req {
                id: id(),
                timeout_ms: 0,
            },
        ),
        ("TOUCH before SUB", vec![], Command::Touch { id: id() }),
        ("CLS before SUB", vec![], Command::Cls),
        ("SUB after CLS", vec![sub("e"), Command::Cls], sub("f")),
    ];
    for (what, before, command) in cases {
        let direct = probe(&pki, nsqd.tcp, &before, &command).await;
        let through = probe(&pki, gate.addr, &before, &command).await;
        assert!(
            direct
                .0
                .as_deref()
                .is_some_and(|t| t.starts_with("E_INVALID")),
            "{what}: nsqd said {direct:?}"
        );
        assert_eq!(through, direct, "{what}: through nsqgate vs nsqd directly");
    }
}
