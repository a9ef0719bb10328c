//! Responses nsqgate answers itself, in nsqd's V1 format: `{"message":"CODE"}` JSON with the
//! `X-NSQ-Content-Type` header, so go-nsq, nsqadmin and nsq_stat read them exactly as they read
//! nsqd's own. No I/O here.

use ::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use ::http::{Response, StatusCode};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Every response body the fronts send: a buffered one of ours or an upstream one streamed.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// nsqd marks every V1 reply with this header; go-nsq parses by it, so it is always kept.
pub fn nsq_content_type() -> HeaderName {
    HeaderName::from_static("x-nsq-content-type")
}

pub fn nsq_v1() -> HeaderValue {
    HeaderValue::from_static("nsq; version=1.0")
}

fn json_type() -> HeaderValue {
    HeaderValue::from_static("application/json; charset=utf-8")
}

fn text_type() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

/// A response that ends a request early (a refusal, a 404, a 405), before it is forwarded;
/// boxed so a `Result<_, EarlyResponse>` stays small.
#[derive(Debug)]
pub struct EarlyResponse(Box<Response<Body>>);

impl EarlyResponse {
    pub fn into_response(self) -> Response<Body> {
        *self.0
    }
}

impl From<Response<Body>> for EarlyResponse {
    fn from(response: Response<Body>) -> EarlyResponse {
        EarlyResponse(Box::new(response))
    }
}

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// nsqd's error shape: `{"message":"CODE"}`.
pub fn error(status: StatusCode, code: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "message": code }))
}

/// A JSON V1 reply.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, json_type());
    headers.insert(nsq_content_type(), nsq_v1());
    response
}

/// A JSON V1 reply whose body is already encoded (an upstream error passed on).
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, json_type());
    headers.insert(nsq_content_type(), nsq_v1());
    response
}

/// A plain-text V1 reply (`OK`, the text form of /stats, /metrics).
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, text_type());
    headers.insert(nsq_content_type(), nsq_v1());
    response
}

/// 401: no identity, or a credential that did not authenticate (the audit log says which).
pub fn unauthenticated() -> Response<Body> {
    let mut response = error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// 403 naming what was refused, so a caller can tell a policy gap from a typo.
pub fn forbidden(action: &str, topic: &str, channel: Option<&str>) -> Response<Body> {
    let mut body = serde_json::json!({
        "message": "FORBIDDEN",
        "action": action,
        "topic": topic,
    });
    if let Some(channel) = channel {
        body["channel"] = channel.into();
    }
    json(StatusCode::FORBIDDEN, &body)
}

/// nsqd's answer on its plain port when TLS is required; nsqadmin, nsq_stat and go's
/// http_api client retry on `https://host:https_port` when they see it.
pub fn tls_required(https_port: u16) -> Response<Body> {
    json(
        StatusCode::FORBIDDEN,
        &serde_json::json!({ "message": "TLS_REQUIRED", "https_port": https_port }),
    )
}

pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "NOT_FOUND")
}

pub fn method_not_allowed() -> Response<Body> {
    error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
}

pub fn bad_request(code: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, code)
}

/// The upstream could not be reached or did not answer in time; the log has the reason.
pub fn bad_gateway() -> Response<Body> {
    error(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE")
}
