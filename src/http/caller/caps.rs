//! The connection caps an HTTP caller counts against once its identity is known: the local
//! `max_per_identity`, and with `[cluster]` its slot in the cap over every replica.

use ::http::StatusCode;

use super::Conn;
use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::cluster::slots::Full;
use crate::http::reply::{self, EarlyResponse};
use crate::limit::conn::Refusal;
use crate::shared::Shared;

/// Counts the caller against `max_per_identity` (the NSQ listener binds identities the same
/// way); over the cap the request is refused with 429.
pub(super) fn bind_identity(conn: &Conn, principal: &Principal) -> Result<(), EarlyResponse> {
    let Ok(mut permit) = conn.permit.lock() else {
        return Err(reply::error(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR").into());
    };
    match permit.bind_identity(&principal.identity) {
        Ok(()) => Ok(()),
        Err(refused) => {
            audit::record(&Event {
                remote: Some(conn.peer),
                principal: Some(principal),
                action: "connect",
                outcome: "deny",
                reason: Some(&refused.to_string()),
                ..Event::default()
            });
            Err(reply::error(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_CONNECTIONS").into())
        }
    }
}

/// With `[cluster]`, the caller's slot in its identity's cap over every replica, held by the
/// connection (one request) and given back when it closes; 429 when they are all taken, as
/// `bind_identity` answers for the local cap, and 503 while Redis is away in `closed` mode.
pub(super) async fn claim_shared_slot(
    shared: &Shared,
    conn: &Conn,
    principal: &Principal,
) -> Result<(), EarlyResponse> {
    let (Some(slots), Some(cap)) = (&shared.slots, shared.config().connections.max_per_identity)
    else {
        return Ok(());
    };
    let identity = &principal.identity;
    let key = format!("conns:identity:{}:{identity}", identity.len());
    let full = match slots.claim(&key, cap).await {
        Ok(Some(slot)) => {
            if let Ok(mut permit) = conn.permit.lock() {
                permit.keep_identity(slot);
            }
            return Ok(());
        }
        Ok(None) => return Ok(()),
        Err(full) => full,
    };
    // Over the cap is the caller's doing (429); an unchecked cap is not (503).
    let (reason, status, code) = match full {
        Full::Cap => {
            shared.conns.count_refusal(Refusal::SharedPerIdentity);
            let reason = Refusal::SharedPerIdentity.to_string();
            (
                reason,
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_CONNECTIONS",
            )
        }
        Full::Unavailable => (
            full.to_string(),
            StatusCode::SERVICE_UNAVAILABLE,
            "SHARED_STATE_UNAVAILABLE",
        ),
    };
    audit::record(&Event {
        remote: Some(conn.peer),
        principal: Some(principal),
        action: "connect",
        outcome: "deny",
        reason: Some(&reason),
        ..Event::default()
    });
    Err(reply::error(status, code).into())
}
