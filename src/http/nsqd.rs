//! The nsqd HTTP API front: routes each request by nsqd's own table, decides who may do it,
//! enforces nsqd's body limits before forwarding, and filters `/stats`. Unknown paths are
//! answered here and never reach nsqd.
//!
//! | path | who |
//! |---|---|
//! | `/ping`, `/info` | anyone |
//! | `/pub`, `/mpub` | `publish` on the topic |
//! | `/topic/*` | `admin` on the topic |
//! | `/channel/*` | `admin` on the topic and channel |
//! | `/stats` | any identity; shows only what it may see |
//! | `/config/*`, `/debug/*`, `/metrics` | an `admin` rule on topic `*` |

use std::sync::Arc;
use std::time::Duration;

use ::http::header::CONTENT_LENGTH;
use ::http::{HeaderMap, Method, Response, StatusCode};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use crate::audit;
use crate::config::http::HttpConfig;
use crate::http::caller::{Caller, Conn};
use crate::http::metrics::Metrics;
use crate::http::publish::{BodyRefusal, Kind};
use crate::http::reply::{self, Body, EarlyResponse};
use crate::http::request::Query;
use crate::http::stats;
use crate::http::upstream::{self, HttpUpstream};
use crate::http::{args, body};
use crate::http::{body_failed, forward, upstream_failed, MAX_FILTERED_RESPONSE};
use crate::limit::{Limited, Publish};
use crate::policy::{Action, Subject};
use crate::shared::Shared;

/// What a request is, by method and path, as nsqd's router sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsqdEndpoint {
    Ping,
    Info,
    Publish(PublishPath),
    Stats,
    /// `/topic/<op>`, all POST.
    Topic,
    /// `/channel/<op>`, all POST.
    Channel,
    /// `GET|PUT /config/:opt` and nsqd's `/debug/...` endpoints.
    Operator,
    /// nsqgate's own counters.
    Metrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishPath {
    Pub,
    Mpub,
}

/// The route for `method path`, or the local answer (404, 405).
pub fn route(method: &Method, path: &str) -> Result<NsqdEndpoint, EarlyResponse> {
    const TOPIC_OPS: [&str; 5] = ["create", "delete", "empty", "pause", "unpause"];
    let (route, allowed): (NsqdEndpoint, &[Method]) = match path {
        "/ping" => (NsqdEndpoint::Ping, &[Method::GET]),
        "/info" => (NsqdEndpoint::Info, &[Method::GET]),
        "/pub" => (NsqdEndpoint::Publish(PublishPath::Pub), &[Method::POST]),
        "/mpub" => (NsqdEndpoint::Publish(PublishPath::Mpub), &[Method::POST]),
        "/stats" => (NsqdEndpoint::Stats, &[Method::GET]),
        "/metrics" => (NsqdEndpoint::Metrics, &[Method::GET]),
        "/debug/setblockrate" => (NsqdEndpoint::Operator, &[Method::PUT]),
        "/debug/freememory" => (NsqdEndpoint::Operator, &[Method::POST]),
        "/debug/pprof/symbol" => (NsqdEndpoint::Operator, &[Method::GET, Method::POST]),
        _ => match path.split_once('/').map(|(_, rest)| rest.split_once('/')) {
            Some(Some(("topic", op))) if TOPIC_OPS.contains(&op) => {
                (NsqdEndpoint::Topic, &[Method::POST])
            }
            Some(Some(("channel", op))) if TOPIC_OPS.contains(&op) => {
                (NsqdEndpoint::Channel, &[Method::POST])
            }
            Some(Some(("config", opt))) if !opt.is_empty() && !opt.contains('/') => {
                (NsqdEndpoint::Operator, &[Method::GET, Method::PUT])
            }
            Some(Some(("debug", rest)))
                if rest == "pprof/"
                    || rest
                        .strip_prefix("pprof/")
                        .is_some_and(crate::http::request::is_pprof_profile) =>
            {
                (NsqdEndpoint::Operator, &[Method::GET])
            }
            _ => return Err(reply::not_found().into()),
        },
    };
    if allowed.contains(method) {
        Ok(route)
    } else {
        Err(reply::method_not_allowed().into())
    }
}

/// The nsqd front of one listener.
pub struct NsqdFront {
    shared: Arc<Shared>,
    upstream: HttpUpstream,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
}

// === impl NsqdFront ===

impl NsqdFront {
    pub fn new(
        shared: Arc<Shared>,
        upstream: HttpUpstream,
        metrics: Arc<Metrics>,
        config: &HttpConfig,
    ) -> NsqdFront {
        NsqdFront {
            shared,
            upstream,
            metrics,
            request_timeout: config.request_timeout,
        }
    }

    pub async fn handle(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let route = match route(req.method(), req.uri().path()) {
            Ok(route) => route,
            Err(refusal) => return refusal.into_response(),
        };
        let query = Query::parse(req.uri().query());
        let path = req.uri().path().to_owned();
        let headers = upstream::forwarded_headers(req.headers());
        if matches!(route, NsqdEndpoint::Ping | NsqdEndpoint::Info) {
            return self.send(Method::GET, &path, headers, Bytes::new()).await;
        }
        let caller = match Caller::authenticate(&self.shared, conn, req.headers()).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal.into_response(),
        };
        match route {
            NsqdEndpoint::Ping | NsqdEndpoint::Info => reply::not_found(),
            NsqdEndpoint::Publish(which) => self.publish(&caller, which, &query, req).await,
            NsqdEndpoint::Stats => self.stats(&caller, &query, headers).await,
            NsqdEndpoint::Topic | NsqdEndpoint::Channel => {
                self.admin(&caller, route, &query, &path, headers).await
            }
            NsqdEndpoint::Operator => {
                if let Err(refusal) = caller.authorize_global_admin(&path) {
                    return refusal.into_response();
                }
                let method = req.method().clone();
                let target = query.with_path(&path);
                let limit = Kind::Pub.limit(&self.shared.config().limits);
                match body::read_limited(&mut req.into_body(), limit, self.request_timeout).await {
                    Ok(body) => self.send(method, &target, headers, body).await,
                    Err(e) => body_failed(
                        &self.shared.metrics,
                        &e,
                        reply::error(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE"),
                    ),
                }
            }
            NsqdEndpoint::Metrics => match caller.authorize_global_admin("/metrics") {
                Ok(()) => reply::text(StatusCode::OK, super::metrics::render(&self.shared)),
                Err(refusal) => refusal.into_response(),
            },
        }
    }

    /// `/topic/*` and `/channel/*`: `admin` on the topic (and channel); a create is charged
    /// to the caller's name quota before it is forwarded.
    async fn admin(
        &self,
        caller: &Caller,
        endpoint: NsqdEndpoint,
        query: &Query,
        path: &str,
        headers: HeaderMap,
    ) -> Response<Body> {
        let named = match endpoint {
            NsqdEndpoint::Channel => args::topic_channel(query, args::ARG_CODES)
                .map(|(topic, channel)| (topic, Some(channel))),
            _ => args::topic(query, args::TOPIC_CODES).map(|topic| (topic, None)),
        };
        let (topic, channel) = match named {
            Ok(named) => named,
            Err(refusal) => return refusal.into_response(),
        };
        if let Err(refusal) = caller.authorize(Action::Admin, topic, channel) {
            return refusal.into_response();
        }
        if path == "/topic/create" || path == "/channel/create" {
            if let Err(refusal) = caller.charge_names(&self.shared, topic, channel) {
                return refusal.into_response();
            }
        }
        let kept: &[&str] = match channel {
            Some(_) => &["topic", "channel"],
            None => &["topic"],
        };
        let target = query.only(kept).with_path(path);
        self.send(Method::POST, &target, headers, Bytes::new())
            .await
    }

    async fn publish(
        &self,
        caller: &Caller,
        which: PublishPath,
        query: &Query,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let topic = match args::topic(query, args::TOPIC_CODES) {
            Ok(topic) => topic,
            Err(refusal) => return refusal.into_response(),
        };
        if let Err(refusal) = caller.authorize(Action::Publish, topic, None) {
            return refusal.into_response();
        }
        let kind = match which {
            PublishPath::Pub => Kind::Pub,
            PublishPath::Mpub => Kind::mpub(query.get("binary")),
        };
        let body = match self.publish_body(kind, req).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        if let Err(refusal) = self.admit_rate(caller, topic, kind, &body).await {
            return refusal;
        }
        if let Err(refusal) = caller.recheck(&self.shared, Action::Publish, topic, None) {
            return refusal.into_response();
        }
        if let Err(refusal) = caller.charge_names(&self.shared, topic, None) {
            return refusal.into_response();
        }
        let mut query = query.only(&["topic", "defer", "binary"]);
        let body = match self.sealed(topic, kind, body) {
            Ok((body, Kind::MpubBinary)) => {
                query.set("binary", "true");
                body
            }
            Ok((body, _)) => body,
            Err(refusal) => return reply::error(refusal.status, refusal.code),
        };
        let target = query.with_path(match which {
            PublishPath::Pub => "/pub",
            PublishPath::Mpub => "/mpub",
        });
        let headers = upstream::forwarded_headers(&HeaderMap::new());
        self.send(Method::POST, &target, headers, body).await
    }

    /// The request's body within nsqd's limits for `kind`, refused by its declared length
    /// before a byte is kept, as nsqd does, and checked by nsqd's body rules.
    async fn publish_body(
        &self,
        kind: Kind,
        req: Request<Incoming>,
    ) -> Result<Bytes, Response<Body>> {
        let limits = self.shared.config().limits;
        let limit = kind.limit(&limits);
        let too_big = || {
            let refusal = kind.too_big();
            reply::error(refusal.status, refusal.code)
        };
        let declared = declared_length(req.headers());
        let mut incoming = req.into_body();
        if declared.is_some_and(|len| len > limit as u64) {
            self.shared.metrics.size_limited("http_body");
            self.drain(&mut incoming, &limits).await;
            return Err(too_big());
        }
        let body = match body::read_limited(&mut incoming, limit, self.request_timeout).await {
            Ok(body) => body,
            Err(e) => {
                if matches!(e, body::BodyError::TooBig(_)) {
                    self.drain(&mut incoming, &limits).await;
                }
                return Err(body_failed(&self.shared.metrics, &e, too_big()));
            }
        };
        match kind.check(&body, &limits) {
            Ok(()) => Ok(body),
            Err(refusal) => Err(reply::error(refusal.status, refusal.code)),
        }
    }

    /// The body as nsqd should get it: sealed when `[integrity]` signs the topic.
    fn sealed(&self, topic: &str, kind: Kind, body: Bytes) -> Result<(Bytes, Kind), BodyRefusal> {
        let config = self.shared.config();
        let Some(seal) = config.integrity.for_topic(topic) else {
            return Ok((body, kind));
        };
        let sealed = crate::http::sealed::seal_body(kind, &body, &seal, &config.limits)?;
        let (messages, _) = sealed.kind.measure(&sealed.body);
        let counter = &self.shared.metrics.integrity.sealed;
        counter.inc_by(u64::from(messages));
        Ok((sealed.body, sealed.kind))
    }

    /// The same buckets as TCP publishing: an identity's rate is one rate, whatever path. A
    /// refusal is counted, audited and answered 429, or 503 when the replicas' shared quota
    /// could not be checked (closed mode: not the caller's doing).
    async fn admit_rate(
        &self,
        caller: &Caller,
        topic: &str,
        kind: Kind,
        body: &[u8],
    ) -> Result<(), Response<Body>> {
        let (messages, bytes) = kind.measure(body);
        let rates = caller.policy.rates_of(&Subject {
            identity: &caller.principal.identity,
            claimed_roles: &caller.principal.claimed_roles,
        });
        let publish = Publish {
            topic,
            rates,
            messages,
            bytes,
        };
        let identity = &caller.principal.identity;
        let admitted = self
            .shared
            .rates
            .admit_kept(&caller.buckets, identity, publish)
            .await;
        let Err(limited) = admitted else {
            return Ok(());
        };
        let (status, message) = match limited {
            Limited::Exceeded { .. } => {
                self.shared.metrics.rate_limited();
                (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS")
            }
            Limited::Unchecked { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "SHARED_STATE_UNAVAILABLE")
            }
        };
        audit::record(&audit::Event {
            remote: Some(caller.peer),
            principal: Some(&caller.principal),
            action: "publish",
            topic: Some(topic),
            outcome: "deny",
            reason: Some(&limited.to_string()),
            ..audit::Event::default()
        });
        Err(reply::json(
            status,
            &serde_json::json!({"message": message, "detail": limited.to_string()}),
        ))
    }

    async fn stats(&self, caller: &Caller, query: &Query, headers: HeaderMap) -> Response<Body> {
        for name in ["topic", "channel"] {
            if let Err(refusal) = args::optional(query, name, args::ARG_CODES) {
                return refusal.into_response();
            }
        }
        let mut upstream_query =
            query.only(&["topic", "channel", "include_clients", "include_mem"]);
        upstream_query.set("format", "json");
        let target = upstream_query.with_path("/stats");
        let response = match self
            .upstream
            .send(Method::GET, &target, headers, Bytes::new())
            .await
        {
            Ok(response) => response,
            Err(e) => return upstream_failed(&self.metrics, &e),
        };
        let status = response.status();
        let body = match body::read_limited(
            &mut response.into_body(),
            MAX_FILTERED_RESPONSE,
            self.request_timeout,
        )
        .await
        {
            Ok(body) => body,
            Err(e) => {
                return upstream_failed(
                    &self.metrics,
                    &crate::http::upstream::UpstreamHttpError::Timeout(e.to_string()),
                )
            }
        };
        if status != StatusCode::OK {
            // nsqd's own error (e.g. 500 with its health text): pass it on as it came.
            return reply::json_bytes(status, body);
        }
        let Ok(mut stats) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return reply::bad_gateway();
        };
        stats::filter(&mut stats, &caller.access());
        if query.get("format") == Some("json") {
            reply::json(StatusCode::OK, &stats)
        } else {
            reply::text(StatusCode::OK, stats::render_text(&stats, unix_now()))
        }
    }

    /// Lets a refused client finish sending (up to the MPUB body limit, for 2 s) so it reads
    /// the 413 rather than a reset; nothing read here is kept.
    async fn drain(&self, incoming: &mut Incoming, limits: &crate::nsq::Limits) {
        let max = Kind::MpubText.limit(limits);
        body::drain(incoming, max, Duration::from_secs(2)).await;
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        forward(&self.upstream, &self.metrics, method, target, headers, body).await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
