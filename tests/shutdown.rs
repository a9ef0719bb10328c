//! SIGTERM: nsqgate stops accepting, stops reading new commands, hands every client the
//! replies nsqd still owes, then closes and exits. Nothing is acknowledged that nsqd does not
//! hold, and nothing nsqd holds goes unacknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::Command;
use common::{Gate, Nsqd, Pki};

#[tokio::test]
async fn sigterm_drains_owed_replies_then_exits() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let mut gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut producer, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let (mut idle, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;

    let acked = Arc::new(AtomicU64::new(0));
    let pid = gate.pid();
    let signaller = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            while acked.load(Ordering::SeqCst) < 300 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        })
    };
    let mut sent = 0u64;
    'publishing: loop {
        for _ in 0..64 {
            producer
                .send(&Command::Pub {
                    topic: "drain".into(),
                    body: format!("m{sent}").into_bytes().into(),
                })
                .await;
            sent += 1;
        }
        for _ in 0..64 {
            match producer.read_frame_within(Duration::from_secs(15)).await {
                Some(frame) => {
                    assert_eq!(&frame.data[..], b"OK", "{}", frame_text(&frame));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                None => break 'publishing,
            }
        }
    }
    signaller.join().unwrap();
    let acked = acked.load(Ordering::SeqCst);
    // Every publish nsqgate forwarded got its OK to the client before the close.
    assert_eq!(nsqd.message_count("drain"), acked, "sent {sent}");
    assert!(
        idle.closed_within(Duration::from_secs(15)).await,
        "idle clients are closed too"
    );
    let status = gate
        .wait_exit(Duration::from_secs(15))
        .expect("nsqgate exits");
    assert!(status.success(), "{status}");
    eprintln!(
        "sent {sent}, acked {acked}, nsqd holds {}",
        nsqd.message_count("drain")
    );
}
