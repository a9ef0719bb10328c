//! The producer pool: known nsqd behind one listener, each new connection sent to the least
//! busy healthy member, with a TCP health check per period. Counting only; the connecting is
//! the [`Connector`]'s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Connector, Routed, UpstreamError};
use crate::limit::conn::NsqdPermit;
use crate::nsq;
use crate::proxy::identify::UpstreamIdentify;

/// Known nsqd for producers: new connections go to the healthy member with the fewest open
/// connections, ties broken round-robin; a member that fails to connect or fails its health
/// check is skipped until it passes again.
pub struct Pool {
    members: Vec<Member>,
    /// Where the round-robin among equally busy members starts next.
    next: AtomicUsize,
}

struct Member {
    connector: Connector,
    active: AtomicUsize,
    healthy: AtomicBool,
}

/// A connection's claims on connection counts, given back on drop.
pub struct Lease {
    /// A pool member's count (its index), for pooled connections.
    member: Option<(Arc<Pool>, usize)>,
    /// The connection's place in the per-nsqd cap, freed on drop.
    _nsqd: NsqdPermit,
}

impl Lease {
    /// The lease of a connection to a single nsqd (not pooled).
    pub(super) fn single(permit: NsqdPermit) -> Lease {
        Lease {
            member: None,
            _nsqd: permit,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(member) = self.member.as_ref().and_then(|(p, i)| p.members.get(*i)) {
            member.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Lowers a member's count unless handed over to a [`Lease`].
struct Claim<'a> {
    member: &'a Member,
    held: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.held {
            self.member.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Pool {
    pub fn new(connectors: Vec<Connector>) -> Arc<Pool> {
        Arc::new(Pool {
            members: connectors
                .into_iter()
                .map(|connector| Member {
                    connector,
                    active: AtomicUsize::new(0),
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn describe(&self) -> String {
        let addresses: Vec<&str> = self.members.iter().map(|m| m.connector.address()).collect();
        format!("pool[{}]", addresses.join(","))
    }

    /// Healthy members first, fewest connections first, equals in turn (producers that
    /// connect one at a time would otherwise all reach the first nsqd); unhealthy ones only
    /// as a last resort.
    fn order(&self) -> Vec<usize> {
        let count = self.members.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by_key(|&i| {
            let m = &self.members[i];
            (
                !m.healthy.load(Ordering::Acquire),
                m.active.load(Ordering::Acquire),
                (i + count - start) % count,
            )
        });
        order
    }

    pub(super) async fn connect(
        self: &Arc<Self>,
        identify: UpstreamIdentify,
    ) -> Result<Routed, UpstreamError> {
        let mut last = UpstreamError::EmptyPool;
        for index in self.order() {
            let member = &self.members[index];
            member.active.fetch_add(1, Ordering::AcqRel);
            let mut claim = Claim { member, held: true };
            match member.connector.connect(identify.clone()).await {
                Ok((upstream, permit)) => {
                    member.healthy.store(true, Ordering::Release);
                    claim.held = false;
                    let lease = Lease {
                        member: Some((self.clone(), index)),
                        _nsqd: permit,
                    };
                    return Ok(Routed {
                        upstream,
                        lease: Some(lease),
                    });
                }
                // The client's settings, refused: another member would refuse them too.
                Err(e) if e.client_refusal().is_some() => return Err(e),
                // At its cap, a member is busy, not broken: try the next one.
                Err(e @ UpstreamError::Limited { .. }) => last = e,
                Err(e) => {
                    tracing::warn!(nsqd = member.connector.address(), error = %e, "pool member failed; trying the next");
                    member.healthy.store(false, Ordering::Release);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Probes every member with a TCP connect each period.
    pub async fn check_health_forever(self: Arc<Self>, every: Duration) {
        loop {
            for member in &self.members {
                // Connect and say the magic, so nsqd sees a client that simply left.
                let probe = async {
                    let mut tcp = TcpStream::connect(member.connector.address()).await?;
                    tcp.write_all(nsq::MAGIC_V2).await?;
                    tcp.shutdown().await
                };
                let up = matches!(tokio::time::timeout(every, probe).await, Ok(Ok(())));
                if member.healthy.swap(up, Ordering::AcqRel) != up {
                    tracing::info!(
                        nsqd = member.connector.address(),
                        healthy = up,
                        "pool member health changed"
                    );
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}
