//! The nsqadmin front: identity required for every page and API call. Reading (GET, HEAD)
//! needs an admin or subscribe rule on topic `*` (nsqadmin shows the whole cluster, so there
//! is nothing narrower to filter by); anything else (its POST/DELETE API: create, delete,
//! empty, pause, tombstone) needs an admin rule on topic `*`. The identity is passed on in
//! `X-Forwarded-User`, so nsqadmin's own `--admin-user` / `--acl-http-header` can use it.

use std::sync::Arc;
use std::time::Duration;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use crate::config::http::HttpConfig;
use crate::http::caller::{Caller, Conn};
use crate::http::metrics::Metrics;
use crate::http::reply::{self, Body, EarlyResponse};
use crate::http::request::{self, X_NSQ_AUTH};
use crate::http::upstream::{self, HttpUpstream};
use crate::http::{args, body, body_failed, forward};
use crate::shared::Shared;

/// The largest request body passed to nsqadmin (its API takes small JSON bodies).
const MAX_BODY: usize = 1024 * 1024;

/// nsqadmin's default `--acl-http-header`.
fn forwarded_user() -> HeaderName {
    HeaderName::from_static("x-forwarded-user")
}

/// The nsqadmin front of one listener.
pub struct AdminFront {
    shared: Arc<Shared>,
    upstream: HttpUpstream,
    /// Upstream failures are counted in the process's registry, like the other fronts'.
    metrics: Metrics,
    request_timeout: Duration,
}

// === impl AdminFront ===

impl AdminFront {
    pub fn new(shared: Arc<Shared>, upstream: HttpUpstream, config: &HttpConfig) -> AdminFront {
        AdminFront {
            metrics: shared.metrics.http.clone(),
            shared,
            upstream,
            request_timeout: config.request_timeout,
        }
    }

    pub async fn handle(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let caller = match Caller::authenticate(&self.shared, conn, req.headers()).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal.into_response(),
        };
        if let Err(refusal) = check_names(req.uri().path()) {
            return refusal.into_response();
        }
        let method = req.method().clone();
        let reading = method == Method::GET || method == Method::HEAD;
        let allowed = if reading {
            caller.access().global_read()
        } else {
            caller.access().global_admin()
        };
        let action = if reading { "read" } else { "admin" };
        let what = format!("nsqadmin {method} {}", request::for_log(req.uri().path()));
        if let Err(refusal) = caller.authorize_global(action, allowed, &what) {
            return refusal.into_response();
        }
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let mut headers = passed_headers(req.headers());
        if let Ok(identity) = HeaderValue::from_str(&caller.principal.identity) {
            headers.insert(forwarded_user(), identity);
        }
        let body =
            match body::read_limited(&mut req.into_body(), MAX_BODY, self.request_timeout).await {
                Ok(body) => body,
                Err(e) => {
                    return body_failed(
                        &self.shared.metrics,
                        &e,
                        reply::error(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"),
                    )
                }
            };
        forward(
            &self.upstream,
            &self.metrics,
            method,
            &target,
            headers,
            body,
        )
        .await
    }
}

/// The browser's headers minus credentials, framing, hop-by-hop headers and any
/// `X-Forwarded-User` it tried to set itself.
fn passed_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = from.clone();
    upstream::strip_hop_by_hop(&mut headers);
    for name in [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        forwarded_user(),
    ] {
        headers.remove(name);
    }
    headers.remove(X_NSQ_AUTH);
    headers
}

/// nsqadmin's pages and API calls that name a topic (and a channel) in the path
/// (`/topics/:topic/:channel`, `/api/topics/:topic/:channel`): the names are checked as nsqd
/// checks them (400 `INVALID_TOPIC` / `INVALID_CHANNEL`, nsqadmin's codes) before the path is
/// logged or forwarded.
pub fn check_names(path: &str) -> Result<(), EarlyResponse> {
    let path = request::decode_path(path);
    let Some(names) = path
        .strip_prefix("/api/topics/")
        .or_else(|| path.strip_prefix("/topics/"))
    else {
        return Ok(());
    };
    let (topic, channel) = match names.split_once('/') {
        Some((topic, channel)) => (topic, Some(channel).filter(|c| !c.is_empty())),
        None => (names, None),
    };
    args::check_topic(topic, args::TOPIC_CODES)?;
    if let Some(channel) = channel {
        args::check_channel(channel, args::TOPIC_CODES)?;
    }
    Ok(())
}
