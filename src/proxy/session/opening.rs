//! The opening proper: magic, IDENTIFY (or another first command) and the in-band TLS
//! upgrade. IDENTIFY is refused with nsqd's own words: nsqd's, relayed, when the client already
//! has its nsqd connection; otherwise nsqd's checks made here against nsqd's ranges.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::error::{FatalReply, Kind};
use crate::net::stream::Replay;
use crate::nsq::{self, Command, ErrorCode};
use crate::proxy::budget::Charge;
use crate::proxy::identify::{self, ClientIdentify, ClientLeg};
use crate::proxy::Listener;

use super::timing::{self, ClientTls, IdentityRules, NsqdOpens};
use super::{
    accept_tls, connect_upstream, fill, read_command, require_tls, upstream_unavailable,
    ClientStream, Opened, SessionError,
};

/// Magic, IDENTIFY (or another first command) and the in-band upgrade; fills `opened`.
pub(super) async fn opening(
    listener: &Listener,
    opened: &mut Opened,
    charge: &mut Option<Charge>,
) -> Result<(), SessionError> {
    let Opened {
        client,
        buf,
        principal,
        ..
    } = opened;
    fill(client.io(), buf, nsq::MAGIC_V2.len(), "the protocol magic").await?;
    if &buf[..4] != nsq::MAGIC_V2 {
        let text = "client sent bad protocol identifier";
        let refusal = FatalReply::new(Kind::ClientProtocol, ErrorCode::BadProtocol, text);
        return Err(SessionError::Refused(refusal));
    }
    let _ = buf.split_to(4);

    let rules = IdentityRules::of(&listener.shared.config);
    let first = read_command(listener, client.io(), buf, charge).await?;
    let tls = client.tls();
    let Command::Identify { body } = &first.command else {
        // IDENTIFY is optional in NSQ; without it there is no TLS upgrade either.
        require_tls(listener, client, first.command.name())?;
        let opens = timing::when_nsqd_opens(rules, None, tls, principal.as_ref());
        if opens == NsqdOpens::Now {
            opened.upstream = Some(connect_upstream(listener, &opened.identify, false).await?);
        }
        // Otherwise no nsqd connection yet: the command is the first one `pending` handles.
        let mut replayed = BytesMut::from(&first.raw[..]);
        replayed.extend_from_slice(&opened.buf);
        opened.buf = replayed;
        return Ok(());
    };

    let identify = ClientIdentify::parse(body)?;
    // A client with no identity yet (one still to AUTH or to show its certificate, or an
    // anonymous one) gets no nsqd connection: nsqgate judges IDENTIFY with nsqd's checks and
    // ranges, before its own TLS rule as nsqd would, and predicts nsqd's reply; the
    // connection opens once it is needed (after the upgrade, or in `pending`).
    let opens = timing::when_nsqd_opens(rules, Some(&identify), tls, principal.as_ref());
    let learned = match opens {
        NsqdOpens::Now => None,
        _ => {
            let learned = listener
                .learned()
                .await
                .map_err(|e| upstream_unavailable(listener, e))?;
            identify.check(&learned.ranges)?;
            Some(learned)
        }
    };
    let upgrade = timing::asks_for_upgrade(&identify, tls);
    if !upgrade {
        require_tls(listener, client, "IDENTIFY without tls_v1")?;
    }
    let auth_required = timing::auth_required(rules, &identify, tls, principal.as_ref());
    let nsqd_reply = if let Some(learned) = learned {
        opened.judged = true;
        identify.expected_reply(&learned.reply)
    } else {
        let routed = connect_upstream(listener, &identify, false).await?;
        let reply = routed.upstream.identify_reply.clone();
        opened.upstream = Some(routed);
        // nsqd was never asked for compression, so this one check is nsqgate's to make.
        if identify.feature_negotiation {
            let learned = listener
                .learned()
                .await
                .map_err(|e| upstream_unavailable(listener, e))?;
            identify.check_compression(&learned.ranges)?;
        }
        reply
    };

    let reply = if identify.feature_negotiation {
        let leg = ClientLeg {
            tls_v1: upgrade,
            auth_required,
        };
        identify::client_reply(&nsqd_reply, leg)
    } else {
        b"OK".to_vec()
    };
    let io = client.io();
    io.write_all(&nsq::response_frame(&reply)).await?;
    io.flush().await?;
    opened.heartbeat = identify.heartbeat_interval();

    if upgrade {
        let ClientStream::Plain(tcp) = std::mem::replace(
            &mut opened.client,
            ClientStream::Secure(Box::new(tokio::io::empty())),
        ) else {
            return Err(SessionError::Closed("TLS upgrade"));
        };
        // A client may have sent its ClientHello right behind IDENTIFY; those bytes are in buf.
        let raw = Replay::new(opened.buf.split().freeze(), tcp);
        let (io, identity) = accept_tls(listener, raw).await?;
        opened.principal = identity;
        opened.client = ClientStream::Secure(io);
        let principal = opened.principal.as_ref();
        let opens = timing::when_nsqd_opens(rules, Some(&identify), ClientTls::Secure, principal);
        if opens == NsqdOpens::Now {
            *charge = None;
            opened.upstream = Some(connect_upstream(listener, &identify, opened.judged).await?);
        }
        let io = opened.client.io();
        io.write_all(&nsq::response_frame(b"OK")).await?;
        io.flush().await?;
    }
    opened.identify = identify;
    Ok(())
}
