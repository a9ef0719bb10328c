//! Revocations across replicas. `nsqgate revoke` adds one to a sorted set in Redis (member
//! `KIND:VALUE`, score its end) and publishes its member on a channel; each replica reads the
//! whole set at start, at every message on the channel and every [`REREAD`], and hands the
//! set in force to live connections through a watch. The channel is only a nudge: a message
//! lost while the subscription reconnects delays a cut by one [`REREAD`] at most, and a
//! replica started later reads what is still in force. While Redis is away the last set read
//! stays in force (each entry until its end).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::revocations::{unix_millis, Revoked, Target};
use super::{Cluster, ClusterError};

/// The sorted set of revocations and the channel that announces new ones (separate
/// namespaces in Redis, so one name serves both).
pub const NAME: &str = "revocations";

/// The longest a revocation waits for a replica that missed its announcement.
pub const REREAD: Duration = Duration::from_millis(500);

/// Adds a revocation of `target` for `lasting`, drops ended ones, and announces it. Returns
/// its end and how many replicas heard the announcement.
pub async fn publish(
    servers: &super::connect::Servers,
    key_prefix: &str,
    target: &Target,
    lasting: Duration,
    timeout: Duration,
) -> Result<(SystemTime, u64), ClusterError> {
    let now = SystemTime::now();
    let until = now + lasting;
    let key = format!("{key_prefix}{NAME}");
    let member = target.member();
    let exchange = async {
        let mut connection = servers.connect().await?;
        let (listeners,): (u64,) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(unix_millis(until))
            .arg(&member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(unix_millis(now))
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(&member)
            .query_async(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(listeners)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(listeners)) => Ok((until, listeners)),
        Ok(Err(e)) => Err(ClusterError::Redis(e)),
        Err(_) => Err(ClusterError::Timeout(timeout)),
    }
}

/// Keeps `revoked` current from Redis for as long as the process runs.
pub async fn follow(cluster: Arc<Cluster>, revoked: watch::Sender<Arc<Revoked>>) {
    let channel = cluster.key(NAME);
    loop {
        let mut subscription = subscribe(&cluster, &channel).await;
        reread(&cluster, &revoked).await;
        // Without a subscription, reread on the timer alone and try again every few seconds.
        let retry_at = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let nudge = async {
                match subscription.as_mut() {
                    Some(stream) => stream.next().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                heard = nudge => {
                    if !heard {
                        break;
                    }
                }
                () = tokio::time::sleep(REREAD) => {
                    if subscription.is_none() && tokio::time::Instant::now() > retry_at {
                        break;
                    }
                }
            }
            reread(&cluster, &revoked).await;
        }
    }
}

/// A subscription to the announcements, or None while Redis cannot give one.
async fn subscribe(cluster: &Cluster, channel: &str) -> Option<redis::aio::PubSubStream> {
    let timeout = cluster.config().timeout;
    let attempt = async {
        let mut pubsub = cluster.subscriber().await?.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no subscription to revocations yet");
            None
        }
        Err(_) => None,
    }
}

/// Reads the revocations still in force and hands them on when they changed.
async fn reread(cluster: &Cluster, revoked: &watch::Sender<Arc<Revoked>>) {
    let key = cluster.key(NAME);
    let now = SystemTime::now();
    let read = cluster
        .call("revocations", |mut connection| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(unix_millis(now))
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async::<Vec<(String, f64)>>(&mut connection)
                .await
        })
        .await;
    let Ok(entries) = read else { return };
    let (fresh, unrecognized) = Revoked::from_scores(&entries);
    for entry in unrecognized {
        tracing::warn!(%entry, "ignored in the revocation set");
    }
    cluster.metrics().revocations_active(fresh.active(now));
    revoked.send_if_modified(|current| {
        if **current == fresh {
            return false;
        }
        *current = Arc::new(fresh);
        true
    });
}
