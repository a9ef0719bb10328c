//! Entry points of the coverage-guided fuzz targets in `fuzz/` (see `fuzz/README.md`): each
//! takes arbitrary bytes, makes one pure call into a decoder or parser of nsqgate, and checks
//! the contract that call documents; any panic is a finding. No I/O here. They live in the
//! crate, always compiled, so a rename breaks this build rather than only `fuzz/`, and the unit
//! tests replay the checked-in corpus (`fuzz/corpus/<target>/`) through them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::BytesMut;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use crate::auth::jwt::{JwtKey, JwtSettings, JwtVerifier, KeyMaterial};
use crate::config::http::NodeMapping;
use crate::http::access::Access;
use crate::http::{args, lookupd, nsqd, request, rewrite};
use crate::nsq::{decode_command, decode_frame, Command, FrameType, IdentifyData, Limits};
use crate::policy::{Policy, Subject};

/// A target's entry point: arbitrary bytes in, a panic on a finding.
pub type Entry = fn(&[u8]);

/// Every target: its name (the binary in `fuzz/` and the corpus folder) and its entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("client_commands", client_commands),
    ("server_frames", server_frames),
    ("identify", identify),
    ("policy_file", policy_file),
    ("proxy_header", proxy_header),
    ("jwt", jwt),
    ("lookupd_reply", lookupd_reply),
    ("http_request", http_request),
    ("registry_commands", registry_commands),
];

/// Limits that recorded traffic fits (pynsq's 265-byte bodies, an MPUB of two) yet small
/// enough that a mutated input of a few KiB reaches both sides of every size check.
const LIMITS: Limits = Limits {
    max_msg_size: 1024,
    max_body_size: 4096,
    max_line_len: 1024,
    max_auth_size: 1024,
};

/// A client's byte stream, command after command, as the session decodes it: a decoded
/// command is exactly the bytes it consumed; `Ok(None)` and `Err` leave the buffer untouched.
/// IDENTIFY bodies and AUTH secrets go on to their own checks.
pub fn client_commands(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode_command(&mut buf, &LIMITS) {
            Ok(Some(decoded)) => {
                assert!(before.starts_with(&decoded.raw), "raw is not the prefix");
                assert_eq!(buf.len() + decoded.raw.len(), before.len());
                match decoded.command {
                    Command::Identify { body } => identify(&body),
                    Command::Auth { secret } => auth_secret(&secret),
                    _ => {}
                }
            }
            Ok(None) => return assert_eq!(buf, before, "Ok(None) changed the buffer"),
            Err(error) => {
                assert_eq!(buf, before, "an error changed the buffer");
                let _ = (error.to_frame(), error.closes_silently());
                return;
            }
        }
    }
}

/// An AUTH secret as the session judges it: a JWT for the [`jwt`] target's verifier, else
/// an API key looked up in the [`REWRITE_POLICY`].
fn auth_secret(secret: &[u8]) {
    if let Some(policy) = rewrite_policy() {
        let _ = crate::auth::identity::from_secret(secret, jwt_verifier(), policy);
    }
}

/// nsqd's byte stream, frame after frame, as the relay decodes it.
pub fn server_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, LIMITS.max_frame_size()) {
        assert_eq!(frame.raw.len(), frame.data.len() + 8);
        match frame.frame_type {
            FrameType::Message => drop(frame.message()),
            FrameType::Error => drop((frame.error_code(), frame.error_description())),
            FrameType::Response => drop(frame.is_heartbeat()),
        }
    }
}

/// An IDENTIFY body: parsed and checked as nsqd would, against nsqd's default ranges.
pub fn identify(data: &[u8]) {
    if let Ok(identify) = IdentifyData::parse(data) {
        let ranges = Default::default();
        let _ = (identify.check(&ranges), identify.check_compression(&ranges));
    }
}

/// A policy file, loaded as `policies/fuzz.toml` and, if it loads, asked one question.
pub fn policy_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(policy) = Policy::from_sources(&[("policies/fuzz.toml".into(), text)]) {
        let subject = Subject {
            identity: "alice",
            claimed_roles: &[],
        };
        let check = policy.check(&subject, crate::policy::Action::Publish, "alice.x", None);
        let _ = (check, policy.warnings(), policy.rates_of(&subject));
    }
}

/// The bytes a trusted load balancer sends first (PROXY v1 or v2).
pub fn proxy_header(data: &[u8]) {
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    if let Ok(Some((len, _client))) = crate::net::proxied::parse(data, peer) {
        assert!(len <= data.len(), "header longer than the input");
    }
}

/// The HS256 secret the `jwt` target signs with, so mutated headers and claims get past the
/// signature check and reach claims parsing.
const JWT_SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

/// A JWT before and after its signature: the input as a token string, then the input split
/// at its first newline into header JSON and claims JSON, encoded and signed with
/// [`JWT_SECRET`].
pub fn jwt(data: &[u8]) {
    let Some(verifier) = jwt_verifier() else {
        return;
    };
    const NOW: u64 = 1_700_000_000;
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verifier.verify_at(token, NOW);
    }
    let (header, claims) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(JWT_SECRET);
    if let Ok(signature) = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, HS256) {
        let _ = verifier.verify_at(&format!("{signing_input}.{signature}"), NOW);
    }
}

const HS256: Algorithm = Algorithm::HS256;

fn jwt_verifier() -> Option<&'static JwtVerifier> {
    static VERIFIER: OnceLock<Option<JwtVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            JwtVerifier::new(&JwtSettings {
                keys: vec![JwtKey {
                    kid: None,
                    algorithm: HS256,
                    material: KeyMaterial::Secret(JWT_SECRET.to_vec()),
                }],
                jwks: None,
                algorithms: Vec::new(),
                jwks_max_stale: None,
                issuer: None,
                audience: Some("nsqgate".to_owned()),
                leeway_secs: 60,
                identity_claim: "sub".to_owned(),
                roles_claim: "roles".to_owned(),
            })
            .ok()
        })
        .as_ref()
}

/// The policy the rewriter filters by (`alice` sees topics `orders*` and channel `billing`)
/// and AUTH secrets are looked up in (the API key `fuzz-api-key`).
const REWRITE_POLICY: &str = r#"
[roles.reader]
allow = [{ action = "subscribe", topics = ["orders*", "orders.**"], channels = ["billing"] }]
[identities]
alice = ["reader"]
[api_keys.svc]
sha256 = "aed2430447c9832d79beb4115b2b797d98cb57c5f8661f18f81b1c564355d07f"
roles = ["reader"]
"#;

fn rewrite_policy() -> Option<&'static Policy> {
    static POLICY: OnceLock<Option<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| Policy::from_sources(&[("p.toml".into(), REWRITE_POLICY.into())]).ok())
        .as_ref()
}

/// A reply of nsqlookupd (`/lookup`, `/nodes`, `/topics`, `/channels`) rewritten for a caller:
/// producers mapped to the one configured node (an nsqd on 127.0.0.1:4150/4151) or dropped,
/// lists cut to what `alice` may see.
pub fn lookupd_reply(data: &[u8]) {
    let Some(policy) = rewrite_policy() else {
        return;
    };
    let Ok(reply) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let node = NodeMapping {
        broadcast_address: "127.0.0.1".to_owned(),
        tcp_port: 4150,
        http_port: 4151,
        gate_address: "gate.example".to_owned(),
        gate_tcp_port: 4150,
        gate_http_port: 4151,
        registered_from: Vec::new(),
    };
    let expected = [vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]];
    let access = Access {
        policy,
        subject: Subject {
            identity: "alice",
            claimed_roles: &[],
        },
    };
    let _ = rewrite::producers(&mut reply.clone(), std::slice::from_ref(&node), &expected);
    rewrite::node_topics(&mut reply.clone(), &access);
    rewrite::topics(&mut reply.clone(), &access);
    let mut channels = reply;
    let _ = rewrite::channel_names(&channels);
    rewrite::channels(&mut channels, "orders", &access);
}

/// A request head as the nsqd and nsqlookupd fronts classify it: screened for smuggling
/// shapes, then the request line's path routed and its query's topic and channel checked as
/// the daemon behind the front checks them.
pub fn http_request(data: &[u8]) {
    if request::screen_head(data).is_err() {
        return;
    }
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let query = request::Query::parse(query);
    let _ = request::decode_path(path);
    if nsqd::route(&method, path).is_ok() {
        let _ = args::topic_channel(&query, args::TOPIC_CODES);
        let _ = args::optional(&query, "channel", args::TOPIC_CODES);
        let _ = query.only(&["topic", "channel"]).with_path(path);
    }
    if lookupd::route(&method, path).is_ok() {
        let _ = args::topic_channel(&query, args::ARG_CODES);
        let _ = args::optional(&query, "topic", args::ARG_CODES);
    }
}

/// nsqd's byte stream to nsqlookupd after the magic, command after command, as the registry
/// roles decode it: a decoded command took at most the input, and its re-encoding (what the
/// guard forwards) decodes to the same command; an IDENTIFY body goes on to a grant's check,
/// whose re-encoded body must pass that check again unchanged.
pub fn registry_commands(data: &[u8]) {
    use crate::registry::wire::{decode_command, encode_command, WireLimits};
    let limits = WireLimits {
        max_identify_size: 1024,
        max_response_size: 1024,
    };
    let grant = registry_grant();
    let mut rest = data;
    while let Ok(Some((command, used))) = decode_command(rest, &limits) {
        assert!(
            used > 0 && used <= rest.len(),
            "took {used} of {}",
            rest.len()
        );
        let mut encoded = BytesMut::new();
        encode_command(&command, &mut encoded);
        let again = decode_command(&encoded, &limits).ok().flatten();
        assert_eq!(
            again,
            Some((command.clone(), encoded.len())),
            "re-encoding changed it"
        );
        if let crate::registry::wire::Command::Identify { body } = &command {
            if let Ok((announced, canonical)) = grant.check_identify(body) {
                let rechecked = grant.check_identify(&canonical).ok();
                assert_eq!(rechecked, Some((announced, canonical.clone())));
            }
        }
        rest = &rest[used..];
    }
}

/// The grant the `registry_commands` target checks IDENTIFY bodies against (nsqd's own
/// defaults: 127.0.0.1:4150/4151).
fn registry_grant() -> crate::registry::rules::NsqdGrant {
    use crate::policy::Pattern;
    crate::registry::rules::NsqdGrant {
        identity: "nsqd".into(),
        broadcast_addresses: vec!["127.0.0.1".into()],
        tcp_port: 4150,
        http_port: 4151,
        topics: Pattern::parse("**").into_iter().collect(),
        channels: Pattern::parse("**").into_iter().collect(),
    }
}

#[cfg(test)]
mod tests;
