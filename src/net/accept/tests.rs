#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::*;
use crate::limit::conn::ConnSettings;
use crate::metrics::Metrics;

fn workers(count: usize) -> Arc<Workers> {
    Arc::new(Workers::start(NonZeroUsize::new(count).unwrap()).unwrap())
}

fn admission(workers: &Arc<Workers>, settings: ConnSettings) -> Admission {
    Admission {
        conns: ConnLimits::new(settings),
        workers: workers.clone(),
    }
}

fn counts() -> ListenerCounts {
    Metrics::new().unwrap().listener("test", "127.0.0.1:0")
}

/// What a test's `serve` gives back: its address, the shutdown switch, the running loop.
struct Serving {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    loops: tokio::task::JoinHandle<()>,
}

/// Binds a port-0 listener on `workers` and serves it with `handle` (cut at shutdown).
fn start<F, Fut>(workers: &Arc<Workers>, settings: ConnSettings, handle: F) -> Serving
where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listeners = bind_per_worker("127.0.0.1:0".parse().unwrap(), workers).unwrap();
    let address = listeners.local_addr();
    let (stop, shutdown) = watch::channel(false);
    let loops = tokio::spawn(serve(
        listeners,
        admission(workers, settings),
        shutdown,
        OnShutdown::Cut,
        ("test", counts()),
        handle,
    ));
    Serving {
        address,
        stop,
        loops,
    }
}

#[tokio::test]
async fn every_socket_of_a_listener_binds_the_port_the_first_was_given() {
    let workers = workers(3);
    let listeners = bind_per_worker("127.0.0.1:0".parse().unwrap(), &workers).unwrap();
    let address = listeners.local_addr();
    assert_ne!(address.port(), 0);
    let bound: Vec<SocketAddr> = (listeners.sockets.iter())
        .map(|socket| socket.local_addr().unwrap())
        .collect();
    assert_eq!(bound, [address; 3]);
}

/// 60 connections on 3 workers: each worker's socket gets a connection with probability 1/3
/// (the kernel hashes the 4-tuple), so one worker gets none with probability at most
/// 3 * (2/3)^60, about 1e-10.
#[tokio::test]
async fn each_worker_accepts_connections_and_runs_them_on_its_own_thread() {
    let workers = workers(3);
    let (ran_on, mut names) = mpsc::unbounded_channel();
    let handle = move |_tcp: TcpStream, _peer: SocketAddr, _permit: ConnPermit| {
        let ran_on = ran_on.clone();
        async move {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            ran_on.send(name).unwrap();
        }
    };
    let serving = start(&workers, ConnSettings::default(), handle);
    let mut per_worker = BTreeMap::new();
    for _ in 0..60 {
        let _tcp = tokio::net::TcpStream::connect(serving.address)
            .await
            .unwrap();
        *per_worker.entry(names.recv().await.unwrap()).or_insert(0) += 1;
    }
    let names: Vec<&String> = per_worker.keys().collect();
    assert_eq!(
        names,
        ["nsqgate-w0", "nsqgate-w1", "nsqgate-w2"],
        "{per_worker:?}"
    );
    serving.stop.send(true).unwrap();
    serving.loops.await.unwrap();
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_at_once_and_shutdown_closes_every_socket() {
    let workers = workers(2);
    let (admitted, mut admissions) = mpsc::unbounded_channel();
    let handle = move |tcp: TcpStream, _peer: SocketAddr, permit: ConnPermit| {
        let admitted = admitted.clone();
        async move {
            let _held = (tcp, permit);
            admitted.send(()).unwrap();
            std::future::pending::<()>().await;
        }
    };
    let settings = ConnSettings {
        max_total: Some(1),
        ..ConnSettings::default()
    };
    let Serving {
        address,
        stop,
        loops,
    } = start(&workers, settings, handle);
    let mut held = tokio::net::TcpStream::connect(address).await.unwrap();
    // Admitted before the next is accepted (which another worker might do first).
    admissions.recv().await.unwrap();
    let mut over = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), over.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    stop.send(true).unwrap();
    loops.await.unwrap();
    // Cut: the held connection ends with the listener, and no socket of it is left listening
    // (20 tries: one socket of two left open would take one of them with 1 - 2^-20).
    let ended = tokio::time::timeout(Duration::from_secs(10), held.read(&mut byte)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    for _ in 0..20 {
        assert!(tokio::net::TcpStream::connect(address).await.is_err());
    }
}
