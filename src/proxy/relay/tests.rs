//! The nsqd → client direction over in-memory streams: what nsqd sends decides how the relay
//! ends, and a refusal is the last thing the client hears (or nothing, where nsqd says nothing).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::inbound::Inbound;
use super::outbound::Outbound;
use super::replies::{Answered, Replies, REPLY_SLOTS};
use super::{Owed, RelayEnd, RelayError, Slot};
use crate::error::{Classify, FatalReply, Kind};
use crate::net::stream::Io;
use crate::nsq::{self, ErrorCode, FrameType, ProtocolError};

const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

fn frame(frame_type: FrameType, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    nsq::encode_frame(frame_type, data, &mut buf);
    buf.freeze()
}

/// A batch that owes `replies` replies, none to a publish.
fn owed(replies: usize) -> Owed {
    Owed {
        replies,
        publishes: 0,
        sent: tokio::time::Instant::now(),
    }
}

/// Runs the outbound direction on `from_nsqd` with `slots` already queued; returns how it
/// ended and every byte the client got.
async fn outbound(from_nsqd: &[u8], slots: Vec<Slot>) -> (Result<RelayEnd, RelayError>, Vec<u8>) {
    let (client, mut client_far) = tokio::io::duplex(64 * 1024);
    let (mut nsqd_far, nsqd) = tokio::io::duplex(64 * 1024);
    nsqd_far.write_all(from_nsqd).await.unwrap();
    // nsqd closes its side after these bytes.
    drop(nsqd_far);
    let replies = Replies::default();
    for slot in slots {
        replies.push(slot).await;
    }
    let metrics = crate::metrics::Metrics::new().unwrap();
    let span = tracing::Span::none();
    let outbound = Outbound::new(client, &replies, WRITE_TIMEOUT, metrics, &span);
    let ended = outbound.run(nsqd, BytesMut::new(), 1 << 20).await;
    let mut heard = Vec::new();
    client_far.read_to_end(&mut heard).await.unwrap();
    (ended, heard)
}

#[tokio::test]
async fn a_malformed_frame_from_nsqd_is_an_upstream_protocol_error() {
    // A size field below 4 cannot even hold the frame type.
    let (ended, _) = outbound(&[0, 0, 0, 1, 0], vec![]).await;
    let error = ended.unwrap_err();
    assert!(
        matches!(
            error,
            RelayError::NsqdFrame(ProtocolError::FrameTooSmall { .. })
        ),
        "{error}"
    );
    assert_eq!(error.ending().kind, Kind::UpstreamProtocol);
}

#[tokio::test]
async fn a_reply_nobody_asked_for_is_an_upstream_protocol_error() {
    let (ended, heard) = outbound(&frame(FrameType::Response, b"OK"), vec![]).await;
    let error = ended.unwrap_err();
    assert!(matches!(error, RelayError::UnaskedReply), "{error}");
    assert_eq!(error.ending().kind, Kind::UpstreamProtocol);
    assert!(heard.is_empty(), "the unasked reply is not relayed");
}

#[tokio::test]
async fn nsqd_closing_after_its_fatal_error_is_blamed_on_what_it_refused() {
    let refusal = frame(
        FrameType::Error,
        b"E_BAD_TOPIC PUB topic name \"x\" is not valid",
    );
    let (ended, heard) = outbound(&refusal, vec![Slot::Upstream(owed(1))]).await;
    let end = ended.unwrap();
    assert!(matches!(
        end,
        RelayEnd::NsqdClosed {
            last_error: Some(_)
        }
    ));
    assert_eq!(end.ending().kind, Kind::ClientProtocol);
    assert_eq!(heard, refusal, "nsqd's words reach the client");

    let (ended, _) = outbound(b"", vec![]).await;
    let end = ended.unwrap();
    assert!(matches!(end, RelayEnd::NsqdClosed { last_error: None }));
    assert_eq!(end.ending().kind, Kind::UpstreamUnavailable);
}

#[tokio::test]
async fn a_refusal_waits_for_the_replies_owed_before_it() {
    let ok = frame(FrameType::Response, b"OK");
    let refusal = FatalReply::new(Kind::Policy, ErrorCode::Unauthorized, "denied");
    let told = refusal.frame().cloned().unwrap();
    let slots = vec![Slot::Upstream(owed(1)), Slot::Refusal(Box::new(refusal))];
    let (ended, heard) = outbound(&ok, slots).await;
    assert!(matches!(ended.unwrap(), RelayEnd::Refused(_)));
    assert_eq!(heard, [&ok[..], &told[..]].concat());
}

#[tokio::test]
async fn a_local_reply_goes_out_between_the_frames_it_came_between() {
    // One read from nsqd: a delivery, the reply to the first command, a heartbeat, the reply
    // to the third. nsqgate answered the second command itself: its reply is due once the
    // first is answered, and goes out before the third's, behind what nsqd sent in between.
    let message = frame(FrameType::Message, &[7u8; 40]);
    let ok = frame(FrameType::Response, b"OK");
    let heartbeat = frame(FrameType::Response, nsq::HEARTBEAT);
    let local = frame(FrameType::Response, b"local");
    let from_nsqd = [&message[..], &ok[..], &heartbeat[..], &ok[..]].concat();
    let slots = vec![
        Slot::Upstream(owed(1)),
        Slot::Reply(local.clone()),
        Slot::Upstream(owed(1)),
    ];
    let (ended, heard) = outbound(&from_nsqd, slots).await;
    assert!(matches!(ended.unwrap(), RelayEnd::NsqdClosed { .. }));
    let expected = [&message[..], &ok[..], &heartbeat[..], &local[..], &ok[..]].concat();
    assert_eq!(heard, expected);
}

#[tokio::test]
async fn a_refusal_nsqd_would_not_say_closes_without_a_word() {
    let refusal = FatalReply::malformed(&ProtocolError::LineTooLong { limit: 16 });
    let (ended, heard) = outbound(b"", vec![Slot::Refusal(Box::new(refusal))]).await;
    let end = ended.unwrap();
    assert!(matches!(end, RelayEnd::Refused(_)));
    assert_eq!(end.ending().kind, Kind::ClientProtocol);
    assert!(heard.is_empty(), "{heard:?}");
}

#[test]
fn a_reply_slot_is_no_larger_than_a_frame_and_a_tag() {
    // Every connection's reply queue allocates a block of 32 slots up front: a refusal held
    // inline doubled it (64 bytes a slot, 2 KiB a block).
    let frame_and_tag = std::mem::size_of::<Bytes>() + std::mem::size_of::<usize>();
    assert!(
        std::mem::size_of::<Slot>() <= frame_and_tag,
        "Slot is {} bytes",
        std::mem::size_of::<Slot>()
    );
}

#[tokio::test]
async fn a_full_reply_queue_holds_the_client_side_until_nsqd_answers() {
    let replies = Replies::default();
    for _ in 0..REPLY_SLOTS {
        replies.push(Slot::Upstream(owed(1))).await;
    }
    let mut next = Box::pin(replies.push(Slot::Upstream(owed(1))));
    let waited = tokio::time::timeout(Duration::from_millis(50), &mut next).await;
    assert!(waited.is_err(), "a full queue took another slot");
    assert!(matches!(replies.answer(), Some(Answered::Other)));
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("an answer makes room");
}

#[tokio::test]
async fn a_drained_reply_queue_keeps_its_first_few_slots_and_gives_back_the_rest() {
    let replies = Replies::default();
    // A 1-deep producer: one slot owed at a time. Its storage stays between messages.
    replies.push(Slot::Upstream(owed(1))).await;
    let first = replies.capacity();
    assert!(replies.answer().is_some());
    replies.release_if_empty();
    assert_eq!(
        replies.capacity(),
        first,
        "a drained queue freed its first slots"
    );
    // A burst grows the queue; once drained, what it grew by is given back.
    for _ in 0..64 {
        replies.push(Slot::Upstream(owed(1))).await;
    }
    replies.release_if_empty();
    assert!(
        replies.capacity() >= 64,
        "a queue that owes replies gave its storage back"
    );
    while replies.answer().is_some() {}
    replies.release_if_empty();
    assert_eq!(
        replies.capacity(),
        0,
        "a quiet connection kept a burst's reply queue"
    );
}

#[tokio::test]
async fn a_local_reply_waits_for_the_replies_owed_before_it_and_wakes_its_sender() {
    let replies = Replies::default();
    replies.push(Slot::Upstream(owed(2))).await;
    replies
        .push(Slot::Reply(Bytes::from_static(b"local")))
        .await;
    tokio::time::timeout(Duration::from_secs(5), replies.local_queued())
        .await
        .expect("a local reply wakes the nsqd -> client side");
    assert!(replies.pop_local().is_none(), "nsqd owes two replies first");
    assert!(replies.answer().is_some());
    assert!(replies.pop_local().is_none(), "nsqd still owes one");
    assert!(replies.answer().is_some());
    assert!(matches!(replies.pop_local(), Some(Slot::Reply(_))));
    assert!(replies.answer().is_none(), "nothing is owed any more");
}

/// The size of the future `f` returns for three arguments.
fn future_size<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn the_client_side_waits_in_a_small_state() {
    // Every idle connection holds this future (boxed) while it waits for its client: it was
    // 3.8 KiB, as large as its rarest waits (a shared identity slot, a publish's tokens), and
    // 1,400 bytes before runs of publishes, whose first version made it 2,192 (1,304 since).
    type R = tokio::io::ReadHalf<Box<dyn Io>>;
    type W = tokio::io::WriteHalf<Box<dyn Io>>;
    let size = future_size(Inbound::<W>::run::<R>);
    assert!(size <= 1408, "the client side's future is {size} bytes");
}

#[test]
fn a_connection_keeps_no_integrity_state_when_no_topic_is_signed() {
    // Every relay used to allocate its `Signed` state (0.4 KiB, kept for the connection's
    // life) whether or not anything could be sealed, opened or withheld.
    let metrics = crate::metrics::Metrics::new().unwrap();
    let unsigned = crate::integrity::Integrity::default();
    assert!(super::Signed::new(unsigned, None, metrics).is_none());
}
