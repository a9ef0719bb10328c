//! The readiness probe: every interval, a verified handshake (TCP, IDENTIFY, TLS with the
//! configured CA and name, AUTH when nsqd asks) with each configured nsqd, exactly as a
//! client's connection would be opened, then closed. The outcome goes to the readiness state,
//! the `nsqgate_upstream_ready` gauge and, when it changes, the log.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::proxy::identify::ClientIdentify;
use crate::proxy::upstream::Destination;
use crate::proxy::Listener;
use crate::shared::Shared;

/// Starts probing the nsqd behind each single-nsqd listener (the producer pool's members
/// are those same nsqd). Nothing to probe: readiness waits for none.
pub fn start(
    shared: &Arc<Shared>,
    listeners: &[Arc<Listener>],
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    for listener in listeners {
        if let Destination::Node(connector) = &listener.destination {
            let address = connector.address().to_owned();
            shared.readiness.expect_upstream(&address);
            let probing = probe_forever(listener.clone(), address, every, shutdown.clone());
            tokio::spawn(probing);
        }
    }
}

async fn probe_forever(
    listener: Arc<Listener>,
    address: String,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = listener.shared.clone();
    loop {
        let result = probe(&listener).await;
        shared.metrics.upstream_probed(&address, result.is_ok());
        let changed = shared.readiness.probed(&address, result.clone());
        match (changed, result) {
            (Some(false), Err(reason)) => {
                warn!(nsqd = %address, error = %reason, "nsqd unavailable: not ready");
            }
            (Some(true), _) => info!(nsqd = %address, "nsqd reachable: ready"),
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One verified handshake with the listener's nsqd, closed right after.
async fn probe(listener: &Listener) -> Result<(), String> {
    let identify = ClientIdentify::default().upstream(
        listener.shared.upstream_tls(),
        &listener.own_metadata,
        false,
    );
    match listener.destination.connect(identify).await {
        Ok(routed) => {
            drop(routed);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
