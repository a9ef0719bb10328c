use super::*;
use crate::nsq::MessageId;

fn id() -> MessageId {
    MessageId(*b"0123456789abcdef")
}

#[test]
fn nsqd_refusals_by_state() {
    let sub = Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    };
    let auth = Command::Auth { secret: "x".into() };
    assert_eq!(State::Init.refusal(&sub), None);
    assert_eq!(State::Init.refusal(&auth), None);
    assert_eq!(
        State::Subscribed.refusal(&auth).as_deref(),
        Some("cannot AUTH in current state")
    );
    assert_eq!(
        State::Subscribed.refusal(&sub).as_deref(),
        Some("cannot SUB in current state")
    );
    assert_eq!(
        State::Closing.refusal(&sub).as_deref(),
        Some("cannot SUB in current state")
    );
    for command in [
        Command::Rdy { count: 1 },
        Command::Fin { id: id() },
        Command::Req {
            id: id(),
            timeout_ms: 0,
        },
        Command::Touch { id: id() },
    ] {
        let text = format!("cannot {} in current state", command.name());
        assert_eq!(State::Init.refusal(&command), Some(text));
        assert_eq!(State::Subscribed.refusal(&command), None);
        assert_eq!(State::Closing.refusal(&command), None);
    }
    // nsqd answers these itself, each with a reply slot of its own.
    assert_eq!(State::Init.refusal(&Command::Cls), None);
    assert_eq!(State::Subscribed.refusal(&Command::Nop), None);
}

#[test]
fn sub_then_cls_moves_through_the_states() {
    let sub = Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    };
    assert_eq!(State::Init.after(&Command::Cls), State::Init);
    assert_eq!(State::Init.after(&sub), State::Subscribed);
    assert_eq!(State::Subscribed.after(&Command::Cls), State::Closing);
    assert_eq!(State::Closing.after(&sub), State::Closing);
}
