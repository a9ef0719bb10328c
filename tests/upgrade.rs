//! Upgrade without refusing anyone: a second nsqgate binds the listening address of one that
//! runs (SO_REUSEPORT), the first gets SIGTERM, stops accepting and drains; a client
//! connecting in a loop throughout is answered every time, and the session open on the first
//! process ends only through its drain. Real processes, real nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::nsqclient::{assert_ok, tls_connector, RawClient};
use common::wire::{decode_frame, Command, MAGIC_V2};
use common::{GateConfig, Nsqd, Pki};

/// The old process's workers, so its sockets on the listening address.
const WORKERS: usize = 2;

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// One connection: the magic and an IDENTIFY asking for TLS, answered with a whole frame
/// (nsqgate's IDENTIFY reply, sent in clear before the upgrade).
fn answered(addr: SocketAddr) -> Result<(), String> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    say_hello(&mut tcp)?;
    read_reply(&mut tcp)
}

fn say_hello(tcp: &mut TcpStream) -> Result<(), String> {
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut hello = MAGIC_V2.to_vec();
    let identify = Command::Identify {
        body: r#"{"tls_v1":true}"#.into(),
    };
    hello.extend_from_slice(&identify.to_bytes());
    tcp.write_all(&hello).map_err(|e| format!("write: {e}"))
}

/// Reads one whole frame.
fn read_reply(tcp: &mut TcpStream) -> Result<(), String> {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if decode_frame(&mut buf, 1 << 20)
            .map_err(|e| format!("{e:?}"))?
            .is_some()
        {
            return Ok(());
        }
        match tcp.read(&mut chunk) {
            Ok(0) => return Err("closed before the IDENTIFY reply".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A client connecting to `addr` over and over on its own thread, counting answers and
/// keeping every failure.
struct Prober {
    answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let answered_count = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, failed, stopped) = (answered_count.clone(), failures.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match answered(addr) {
                    Ok(()) => count.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failed.lock().unwrap().push(e);
                        0
                    }
                };
            }
        });
        Prober {
            answered: answered_count,
            failures,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (up to 30 s) for `more` answers than there are now.
    fn wait_for(&self, more: usize, what: &str) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "{more} answers {what} never came"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_process_takes_over_the_address_while_the_old_one_drains() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let config =
        GateConfig::anonymous(nsqd.tcp).table(&format!("[connections]\nworkers = {WORKERS}"));
    let mut old = config.start(&pki);
    let addr = old.addr;

    // A session on the old process, in the middle of its work.
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut live, _) = RawClient::upgraded(addr, &connector, serde_json::json!({})).await;
    assert_ok(
        live.publish("upgrade", b"before").await,
        "PUB on the old process",
    );

    let prober = Prober::start(addr);
    prober.wait_for(20, "from the old process alone");

    // The new process binds the very address the old one listens on.
    let address = addr.to_string();
    let new = config.start_env(&pki, &[("NSQGATE_CLIENT__LISTEN", &address)]);
    assert_eq!(new.addr, addr);
    prober.wait_for(50, "from both");

    old.terminate();
    // The old process's session ends by its drain (closed, never reset mid-reply), and the
    // process exits by itself.
    assert!(live.closed_within(Duration::from_secs(15)).await);
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exits");
    assert!(status.success(), "{status}");
    prober.wait_for(50, "from the new process alone");

    let (count, failures) = prober.finish();
    eprintln!("{count} connections answered through the overlap");
    // docs/operations.md, "Upgrading": a handshake the kernel completes for one of the old
    // listener's sockets between its last accept and its close is reset (unless
    // net.ipv4.tcp_migrate_req = 1). That instant is once per socket, one per worker: a reset
    // at most for each, and only resets.
    let instant = failures.len() <= WORKERS && failures.iter().all(|f| f.contains("reset by peer"));
    if instant && !failures.is_empty() {
        eprintln!(
            "the close instants reset {} connection(s): {failures:?}",
            failures.len()
        );
    }
    assert!(
        failures.is_empty() || instant,
        "{} of {} connections were not answered: {:?}\nold log:\n{}",
        failures.len(),
        count + failures.len(),
        &failures[..failures.len().min(5)],
        old.log()
    );
    assert_eq!(nsqd.message_count("upgrade"), 1);
    // The new process is the one serving now.
    let (mut fresh, _) = RawClient::upgraded(addr, &connector, serde_json::json!({})).await;
    assert_ok(
        fresh.publish("upgrade", b"after").await,
        "PUB on the new process",
    );
    drop(new);
}

#[test]
fn connections_queued_when_sigterm_arrives_are_answered_not_reset() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let mut gate = GateConfig::anonymous(nsqd.tcp).start(&pki);
    // Stopped, nsqgate accepts nothing: the kernel completes these handshakes and queues them.
    signal(gate.pid(), "STOP");
    let mut queued: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut tcp = TcpStream::connect_timeout(&gate.addr, Duration::from_secs(5)).unwrap();
            say_hello(&mut tcp).unwrap();
            tcp
        })
        .collect();
    // SIGTERM is waiting when it runs again: it closes its listener with all 20 queued.
    signal(gate.pid(), "TERM");
    signal(gate.pid(), "CONT");
    for (n, tcp) in queued.iter_mut().enumerate() {
        read_reply(tcp).unwrap_or_else(|e| panic!("queued connection {n}: {e}\n{}", gate.log()));
    }
    drop(queued);
    let status = gate
        .wait_exit(Duration::from_secs(20))
        .expect("nsqgate exits");
    assert!(status.success(), "{status}");
}
