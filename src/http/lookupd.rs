//! The nsqlookupd front: discovery answers rewritten so clients only ever learn nsqgate
//! addresses, and only about topics they may see; mutations need `admin`.
//!
//! | path | who |
//! |---|---|
//! | `/ping`, `/info` | anyone |
//! | `/lookup`, `/topics`, `/channels`, `/nodes` | any identity; filtered and rewritten |
//! | `/lookup`, `/nodes` without credentials | only with `anonymous_discovery`: producers only |
//! | `/topic/create|delete|tombstone`, `/channel/create|delete` | `admin` on topic (channel) |
//! | `/debug`, `/debug/pprof/*`, `/metrics` | an `admin` rule on topic `*` |

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderMap, Method, Response, StatusCode};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::Value;
use tracing::warn;

use crate::config::http::{LookupdFront as LookupdConfig, NodeMapping};
use crate::http::caller::{Caller, Conn};
use crate::http::metrics::Metrics;
use crate::http::reply::{self, Body, EarlyResponse};
use crate::http::request::{self, Credential, Query};
use crate::http::rewrite;
use crate::http::upstream::{self, HttpUpstream, UpstreamHttpError};
use crate::http::{args, body};
use crate::http::{forward, upstream_failed, MAX_FILTERED_RESPONSE};
use crate::policy::Action;
use crate::shared::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupdEndpoint {
    Open,
    Lookup,
    Topics,
    Channels,
    Nodes,
    TopicAdmin,
    ChannelAdmin,
    Tombstone,
    Operator,
    Metrics,
}

pub(crate) fn route(method: &Method, path: &str) -> Result<LookupdEndpoint, EarlyResponse> {
    let (route, allowed): (LookupdEndpoint, &[Method]) = match path {
        "/ping" | "/info" => (LookupdEndpoint::Open, &[Method::GET]),
        "/lookup" => (LookupdEndpoint::Lookup, &[Method::GET]),
        "/topics" => (LookupdEndpoint::Topics, &[Method::GET]),
        "/channels" => (LookupdEndpoint::Channels, &[Method::GET]),
        "/nodes" => (LookupdEndpoint::Nodes, &[Method::GET]),
        "/topic/create" | "/topic/delete" => (LookupdEndpoint::TopicAdmin, &[Method::POST]),
        "/channel/create" | "/channel/delete" => (LookupdEndpoint::ChannelAdmin, &[Method::POST]),
        "/topic/tombstone" => (LookupdEndpoint::Tombstone, &[Method::POST]),
        "/metrics" => (LookupdEndpoint::Metrics, &[Method::GET]),
        "/debug" | "/debug/pprof" => (LookupdEndpoint::Operator, &[Method::GET]),
        "/debug/pprof/symbol" => (LookupdEndpoint::Operator, &[Method::GET, Method::POST]),
        p if p
            .strip_prefix("/debug/pprof/")
            .is_some_and(crate::http::request::is_pprof_profile) =>
        {
            (LookupdEndpoint::Operator, &[Method::GET])
        }
        _ => return Err(reply::not_found().into()),
    };
    if allowed.contains(method) {
        Ok(route)
    } else {
        Err(reply::method_not_allowed().into())
    }
}

/// The nsqlookupd front of one listener.
pub struct LookupdFront {
    shared: Arc<Shared>,
    upstream: HttpUpstream,
    metrics: Arc<Metrics>,
    /// The nsqd instances nsqgate fronts, and their nsqgate addresses.
    nodes: Vec<NodeMapping>,
    /// Credential-less callers may discover (`/lookup`, `/nodes`) and nothing else.
    anonymous_discovery: bool,
}

// === impl LookupdFront ===

impl LookupdFront {
    pub fn new(
        shared: Arc<Shared>,
        upstream: HttpUpstream,
        metrics: Arc<Metrics>,
        config: &LookupdConfig,
    ) -> LookupdFront {
        LookupdFront {
            shared,
            upstream,
            metrics,
            nodes: config.nodes.clone(),
            anonymous_discovery: config.anonymous_discovery,
        }
    }

    pub async fn handle(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let route = match route(req.method(), req.uri().path()) {
            Ok(route) => route,
            Err(refusal) => return refusal.into_response(),
        };
        let path = req.uri().path().to_owned();
        let query = Query::parse(req.uri().query());
        let headers = upstream::forwarded_headers(req.headers());
        if route == LookupdEndpoint::Open {
            return self.send(Method::GET, &path, headers).await;
        }
        let anonymous =
            request::credential(req.headers()) == Credential::None && conn.cert.is_none();
        if self.anonymous_discovery
            && anonymous
            && matches!(route, LookupdEndpoint::Lookup | LookupdEndpoint::Nodes)
        {
            return self.discover(route, &query, headers).await;
        }
        let caller = match Caller::authenticate(&self.shared, conn, req.headers()).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal.into_response(),
        };
        match route {
            LookupdEndpoint::Open => reply::not_found(),
            LookupdEndpoint::Lookup => self.lookup(&caller, &query, headers).await,
            LookupdEndpoint::Topics => match self.fetch(&path, headers).await {
                Ok(mut reply) => {
                    rewrite::topics(&mut reply, &caller.access());
                    reply::json(StatusCode::OK, &reply)
                }
                Err(response) => response,
            },
            LookupdEndpoint::Channels => {
                let topic = match args::topic(&query, args::ARG_CODES) {
                    Ok(topic) => topic,
                    Err(refusal) => return refusal.into_response(),
                };
                let target = query.only(&["topic"]).with_path(&path);
                match self.fetch(&target, headers).await {
                    Ok(mut reply) => {
                        rewrite::channels(&mut reply, topic, &caller.access());
                        reply::json(StatusCode::OK, &reply)
                    }
                    Err(response) => response,
                }
            }
            LookupdEndpoint::Nodes => match self.fetch(&path, headers).await {
                Ok(mut reply) => {
                    self.rewrite(&mut reply).await;
                    rewrite::node_topics(&mut reply, &caller.access());
                    reply::json(StatusCode::OK, &reply)
                }
                Err(response) => response,
            },
            LookupdEndpoint::TopicAdmin
            | LookupdEndpoint::ChannelAdmin
            | LookupdEndpoint::Tombstone => {
                self.administer(&caller, route, &path, &query, headers)
                    .await
            }
            LookupdEndpoint::Operator => match caller.authorize_global_admin(&path) {
                Ok(()) => {
                    let target = query.with_path(&path);
                    self.send(req.method().clone(), &target, headers).await
                }
                Err(refusal) => refusal.into_response(),
            },
            LookupdEndpoint::Metrics => match caller.authorize_global_admin("/metrics") {
                Ok(()) => reply::text(StatusCode::OK, super::metrics::render(&self.shared)),
                Err(refusal) => refusal.into_response(),
            },
        }
    }

    /// `/topic/*`, `/channel/*`: names checked, `admin` authorized, only the parameters the
    /// endpoint takes passed on (a tombstone's node mapped to nsqlookupd's name for it).
    async fn administer(
        &self,
        caller: &Caller,
        route: LookupdEndpoint,
        path: &str,
        query: &Query,
        headers: HeaderMap,
    ) -> Response<Body> {
        let named = match route {
            LookupdEndpoint::ChannelAdmin => args::topic_channel(query, args::ARG_CODES)
                .map(|(topic, channel)| (topic, Some(channel))),
            _ => args::topic(query, args::ARG_CODES).map(|topic| (topic, None)),
        };
        let (topic, channel) = match named {
            Ok(named) => named,
            Err(refusal) => return refusal.into_response(),
        };
        if route == LookupdEndpoint::Tombstone && !query.has("node") {
            return reply::bad_request("MISSING_ARG_NODE");
        }
        if let Err(refusal) = caller.authorize(Action::Admin, topic, channel) {
            return refusal.into_response();
        }
        let mut upstream_query = match route {
            LookupdEndpoint::ChannelAdmin => query.only(&["topic", "channel"]),
            LookupdEndpoint::Tombstone => query.only(&["topic", "node"]),
            _ => query.only(&["topic"]),
        };
        if let Some(node) = query
            .get("node")
            .filter(|_| route == LookupdEndpoint::Tombstone)
        {
            upstream_query.set("node", &rewrite::tombstone_node(node, &self.nodes));
        }
        let target = upstream_query.with_path(path);
        self.send(Method::POST, &target, headers).await
    }

    /// Discovery for a caller without credentials: which nsqgate addresses serve a topic
    /// (`/lookup`, its channels left out) and which nodes there are (`/nodes`, their topic
    /// lists left out). Nothing else is answered without an identity.
    async fn discover(
        &self,
        route: LookupdEndpoint,
        query: &Query,
        headers: HeaderMap,
    ) -> Response<Body> {
        let target = match route {
            LookupdEndpoint::Lookup => match args::topic(query, args::ARG_CODES) {
                Ok(_) => query.only(&["topic"]).with_path("/lookup"),
                Err(refusal) => return refusal.into_response(),
            },
            _ => "/nodes".to_owned(),
        };
        let mut reply = match self.fetch(&target, headers).await {
            Ok(reply) => reply,
            Err(response) => return response,
        };
        self.rewrite(&mut reply).await;
        if let Some(channels) = reply.get_mut("channels") {
            *channels = Value::Array(Vec::new());
        }
        for producer in reply["producers"].as_array_mut().into_iter().flatten() {
            for list in ["topics", "tombstones"] {
                if let Some(values) = producer.get_mut(list) {
                    *values = Value::Array(Vec::new());
                }
            }
        }
        reply::json(StatusCode::OK, &reply)
    }

    /// `/lookup?topic=`: a topic the caller may not see is as unknown as a missing one.
    async fn lookup(&self, caller: &Caller, query: &Query, headers: HeaderMap) -> Response<Body> {
        let topic = match args::topic(query, args::ARG_CODES) {
            Ok(topic) => topic,
            Err(refusal) => return refusal.into_response(),
        };
        let target = query.only(&["topic"]).with_path("/lookup");
        let mut reply = match self.fetch(&target, headers).await {
            Ok(reply) => reply,
            Err(response) => return response,
        };
        let access = caller.access();
        let channels = rewrite::channel_names(&reply);
        if !access.topic_visible(topic, channels.iter().map(String::as_str)) {
            return reply::error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
        }
        rewrite::channels(&mut reply, topic, &access);
        self.rewrite(&mut reply).await;
        reply::json(StatusCode::OK, &reply)
    }

    /// Maps producers to nsqgate addresses; unknown ones, and ones whose registration came
    /// from an address that is not their node's, are dropped, logged and counted.
    async fn rewrite(&self, reply: &mut Value) {
        let expected = self.expected_sources().await;
        let dropped = rewrite::producers(reply, &self.nodes, &expected);
        for producer in &dropped {
            warn!(
                broadcast_address = %producer.broadcast_address,
                tcp_port = producer.tcp_port,
                http_port = producer.http_port,
                remote_address = %producer.remote_address,
                why = producer.why,
                "nsqlookupd lists a producer that is not a configured node; dropped"
            );
        }
        Metrics::add(
            &self.metrics.rogue_producers,
            u64::try_from(dropped.len()).unwrap_or(u64::MAX),
        );
    }

    /// For each node, the IPs its registration may come from: `registered_from`, else its
    /// broadcast address (resolved now when it is a name; unresolvable: none, so its
    /// producers are dropped rather than trusted).
    async fn expected_sources(&self) -> Vec<Vec<IpAddr>> {
        let mut expected = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            if !node.registered_from.is_empty() {
                expected.push(node.registered_from.clone());
                continue;
            }
            let host = node.broadcast_address.as_str();
            let ips = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match tokio::net::lookup_host((host, node.tcp_port)).await {
                    Ok(addresses) => addresses.map(|a| a.ip()).collect(),
                    Err(e) => {
                        warn!(node = host, error = %e, "cannot resolve a node's broadcast_address");
                        Vec::new()
                    }
                },
            };
            expected.push(ips);
        }
        expected
    }

    /// GETs a JSON reply to filter; a non-200 answer is passed on as nsqlookupd gave it.
    async fn fetch(&self, target: &str, headers: HeaderMap) -> Result<Value, Response<Body>> {
        let response = self
            .upstream
            .send(Method::GET, target, headers, Bytes::new())
            .await
            .map_err(|e| upstream_failed(&self.metrics, &e))?;
        let status = response.status();
        let body = body::read_limited(
            &mut response.into_body(),
            MAX_FILTERED_RESPONSE,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| {
            upstream_failed(
                &self.metrics,
                &UpstreamHttpError::Timeout(format!("{}: {e}", self.upstream.address())),
            )
        })?;
        if status != StatusCode::OK {
            return Err(reply::json_bytes(status, body));
        }
        serde_json::from_slice(&body).map_err(|_| reply::bad_gateway())
    }

    async fn send(&self, method: Method, target: &str, headers: HeaderMap) -> Response<Body> {
        forward(
            &self.upstream,
            &self.metrics,
            method,
            target,
            headers,
            Bytes::new(),
        )
        .await
    }
}
