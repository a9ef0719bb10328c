//! Credential attacks under concurrency (issue 13): 50 connections at once, each sending AUTH
//! with one of a forged signature, `alg: none`, an expired token, a wrong audience, an unknown
//! API key, or a good token or key, then a PUB. Every bad one gets `E_AUTH_FAILED` (the
//! README's refusal for a secret that proves no identity) and the close, every good one
//! publishes, and nothing of a bad one reaches nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod identity_support;

use std::time::Duration;

use serde_json::json;

use common::nsqclient::frame_text;
use common::wire::{Command, FrameType};
use identity_support::{claims, connect, hand_built, now, with, Fixture};

/// Connections started together.
const CONNECTIONS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    BadSignature,
    AlgNone,
    Expired,
    WrongAudience,
    UnknownApiKey,
    GoodToken,
    GoodApiKey,
}

const KINDS: [Kind; 7] = [
    Kind::BadSignature,
    Kind::AlgNone,
    Kind::Expired,
    Kind::WrongAudience,
    Kind::UnknownApiKey,
    Kind::GoodToken,
    Kind::GoodApiKey,
];

impl Kind {
    fn is_good(self) -> bool {
        matches!(self, Kind::GoodToken | Kind::GoodApiKey)
    }

    /// A fresh secret of this kind (tokens differ per connection: `jti`).
    fn secret(self, f: &Fixture, n: usize) -> String {
        let alice = with(claims("alice"), "jti", json!(n));
        match self {
            Kind::BadSignature => {
                // A real token's header and claims with another token's signature.
                let token = f.token("hs", &alice);
                let other = f.token("hs", &with(alice, "sub", json!("mallory")));
                let (head, _) = token.rsplit_once('.').unwrap();
                let (_, signature) = other.rsplit_once('.').unwrap();
                format!("{head}.{signature}")
            }
            Kind::AlgNone => hand_built(&json!({"alg": "none", "kid": "hs"}), &alice, ""),
            Kind::Expired => f.token(
                "es",
                &with(
                    with(alice, "exp", json!(now() - 600)),
                    "iat",
                    json!(now() - 1200),
                ),
            ),
            Kind::WrongAudience => f.token("es", &with(alice, "aud", json!("someone-else"))),
            Kind::UnknownApiKey => nsqgate::auth::apikey::generate(),
            Kind::GoodToken => f.token(if n.is_multiple_of(2) { "es" } else { "hs" }, &alice),
            Kind::GoodApiKey => f.api_key.clone(),
        }
    }
}

/// One connection: upgrade, AUTH, PUB `orders.c{n}`; what it saw, or why it is wrong.
async fn attempt(f: &Fixture, n: usize, kind: Kind) -> Result<(), String> {
    let secret = kind.secret(f, n);
    let topic = format!("orders.c{n}");
    let (mut client, reply) = connect(f.gate.addr, &f.ca(), None).await;
    if reply["auth_required"] != true {
        return Err(format!("IDENTIFY reply {reply}"));
    }
    client
        .send(&Command::Auth {
            secret: secret.clone().into_bytes().into(),
        })
        .await;
    client
        .send(&Command::Pub {
            topic,
            body: b"c".to_vec().into(),
        })
        .await;
    let auth = client
        .read_frame()
        .await
        .map(|f| (f.frame_type, frame_text(&f)));
    if kind.is_good() {
        let published = client.read_frame().await.map(|f| frame_text(&f));
        return match (auth, published) {
            (Some((FrameType::Response, _)), Some(ok)) if ok == "OK" => Ok(()),
            other => Err(format!("{kind:?}: {other:?}")),
        };
    }
    match auth {
        Some((FrameType::Error, text)) if text.starts_with("E_AUTH_FAILED ") => {
            if text.contains(&secret) {
                return Err(format!("{kind:?}: the secret is echoed: {text}"));
            }
            if client.closed_within(Duration::from_secs(10)).await {
                Ok(())
            } else {
                Err(format!("{kind:?}: {text}, then not closed"))
            }
        }
        other => Err(format!("{kind:?}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_auth_attempts_refuse_every_bad_credential_and_admit_every_good_one() {
    let f = std::sync::Arc::new(Fixture::new());
    let kinds: Vec<Kind> = (0..CONNECTIONS).map(|n| KINDS[n % KINDS.len()]).collect();
    let tasks: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(n, &kind)| {
            let f = f.clone();
            tokio::spawn(async move { attempt(&f, n, kind).await })
        })
        .collect();
    let mut wrong = Vec::new();
    for (n, task) in tasks.into_iter().enumerate() {
        if let Err(problem) = task.await.unwrap() {
            wrong.push(format!("connection {n}: {problem}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    for (n, kind) in kinds.iter().enumerate() {
        let count = f.nsqd.message_count(&format!("orders.c{n}"));
        let expected = u64::from(kind.is_good());
        assert_eq!(
            count, expected,
            "connection {n} ({kind:?}) published {count}"
        );
    }
    // nsqd's topics are exactly the good connections' ones.
    let topics = f.nsqd.stats()["topics"].as_array().unwrap().len();
    let good = kinds.iter().filter(|k| k.is_good()).count();
    assert_eq!(topics, good, "{}", f.nsqd.stats());
}
