//! nsqlookupd replies as clients of nsqgate must see them: every producer is mapped to the
//! nsqgate address configured for that nsqd, a producer that is not configured (a rogue nsqd
//! that registered itself, or a forgotten one) or that claims a configured node's description
//! but registered from another address is dropped, and topic and channel lists keep only what
//! the caller may see. No I/O here (names are resolved by the caller).

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::config::http::NodeMapping;
use crate::http::access::Access;

/// A producer nsqlookupd listed that matches no configured node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub broadcast_address: String,
    pub tcp_port: u64,
    pub http_port: u64,
    pub remote_address: String,
    /// No node has this description, or one has but its registration came from elsewhere.
    pub why: &'static str,
}

/// Rewrites the `producers` array of `reply` in place; returns the producers it dropped.
/// A producer matches a node by its self-description (broadcast address and ports) *and* by
/// the address nsqlookupd saw its registration come from (`remote_address`), which must be
/// one of `expected[i]` for node `i`. Every field that names the nsqd (address, ports,
/// hostname, the address it registered from) is replaced, so nothing about the internal
/// network reaches the client.
pub fn producers(
    reply: &mut Value,
    nodes: &[NodeMapping],
    expected: &[Vec<IpAddr>],
) -> Vec<Dropped> {
    let mut dropped = Vec::new();
    let Some(list) = reply.get_mut("producers").and_then(Value::as_array_mut) else {
        return dropped;
    };
    list.retain_mut(|producer| {
        let broadcast = producer["broadcast_address"].as_str().unwrap_or("");
        let tcp_port = producer["tcp_port"].as_u64().unwrap_or(0);
        let http_port = producer["http_port"].as_u64().unwrap_or(0);
        let remote = producer["remote_address"].as_str().unwrap_or("");
        let seen_from = remote.parse::<SocketAddr>().ok().map(|a| a.ip());
        let described = nodes.iter().position(|node| {
            node.broadcast_address == broadcast
                && u64::from(node.tcp_port) == tcp_port
                && u64::from(node.http_port) == http_port
        });
        let node = described.filter(|&i| {
            seen_from.is_some_and(|ip| expected.get(i).is_some_and(|ips| ips.contains(&ip)))
        });
        match node.and_then(|i| nodes.get(i)) {
            Some(node) => {
                producer["broadcast_address"] = node.gate_address.clone().into();
                producer["hostname"] = node.gate_address.clone().into();
                producer["tcp_port"] = node.gate_tcp_port.into();
                producer["http_port"] = node.gate_http_port.into();
                producer["remote_address"] =
                    format!("{}:{}", node.gate_address, node.gate_tcp_port).into();
                true
            }
            None => {
                dropped.push(Dropped {
                    broadcast_address: broadcast.to_owned(),
                    tcp_port,
                    http_port,
                    remote_address: remote.to_owned(),
                    why: if described.is_some() {
                        "registered from an address that is not the node's"
                    } else {
                        "not a configured node"
                    },
                });
                false
            }
        }
    });
    dropped
}

/// `/nodes`: each producer's `topics` (and the parallel `tombstones`) cut to visible topics.
pub fn node_topics(reply: &mut Value, access: &Access<'_>) {
    let Some(list) = reply.get_mut("producers").and_then(Value::as_array_mut) else {
        return;
    };
    for producer in list {
        let topics = strings(&producer["topics"]);
        let tombstones = producer["tombstones"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let keep: Vec<bool> = topics
            .iter()
            .map(|topic| access.topic_visible(topic, []))
            .collect();
        let pick = |values: Vec<Value>| -> Value {
            values
                .into_iter()
                .zip(&keep)
                .filter(|(_, keep)| **keep)
                .map(|(value, _)| value)
                .collect::<Vec<_>>()
                .into()
        };
        producer["topics"] = pick(topics.into_iter().map(Value::from).collect());
        if producer.get("tombstones").is_some() {
            producer["tombstones"] = pick(tombstones);
        }
    }
}

/// `/topics`: only topics the caller may see.
pub fn topics(reply: &mut Value, access: &Access<'_>) {
    if let Some(list) = reply.get_mut("topics").and_then(Value::as_array_mut) {
        list.retain(|topic| access.topic_visible(topic.as_str().unwrap_or(""), []));
    }
}

/// `/channels` and the `channels` of `/lookup`: only channels the caller may see.
pub fn channels(reply: &mut Value, topic: &str, access: &Access<'_>) {
    if let Some(list) = reply.get_mut("channels").and_then(Value::as_array_mut) {
        list.retain(|channel| access.channel_visible(topic, channel.as_str().unwrap_or("")));
    }
}

/// The channel names of a `/lookup` reply, before filtering (they decide topic visibility).
pub fn channel_names(reply: &Value) -> Vec<String> {
    strings(&reply["channels"])
}

/// `/topic/tombstone?node=`: the caller names a node by its nsqgate address; nsqlookupd knows
/// it by its own. Unknown names pass unchanged (nsqlookupd then refuses them).
pub fn tombstone_node(node: &str, nodes: &[NodeMapping]) -> String {
    nodes
        .iter()
        .find(|n| format!("{}:{}", n.gate_address, n.gate_http_port) == node)
        .map(|n| format!("{}:{}", n.broadcast_address, n.http_port))
        .unwrap_or_else(|| node.to_owned())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
