//! The NSQ V2 wire format as a client sees it, written here from the protocol spec so that the
//! load generator shares no code with nsqgate (a codec bug there must not hide in both).

use bytes::{Buf, BufMut, BytesMut};

pub const MAGIC_V2: &[u8] = b"  V2";
/// The largest frame accepted from a peer (nsqd's default max message size is 1 MiB).
const MAX_FRAME: usize = 16 * 1024 * 1024;

pub const FRAME_RESPONSE: u32 = 0;
pub const FRAME_ERROR: u32 = 1;
pub const FRAME_MESSAGE: u32 = 2;

pub struct Frame {
    pub kind: u32,
    pub data: BytesMut,
}

impl Frame {
    pub fn is_heartbeat(&self) -> bool {
        self.kind == FRAME_RESPONSE && &self.data[..] == b"_heartbeat_"
    }

    /// A message frame's 16-byte id (after the 8-byte timestamp and 2-byte attempts).
    pub fn message_id(&self) -> Option<&[u8]> {
        (self.kind == FRAME_MESSAGE && self.data.len() >= 26).then(|| &self.data[10..26])
    }
}

/// Takes one complete frame off the front of `buf`, or None while it is incomplete.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(4..=MAX_FRAME).contains(&size) {
        return Err(format!("frame size {size} out of range"));
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    let kind = buf.get_u32();
    let data = buf.split_to(size - 4);
    Ok(Some(Frame { kind, data }))
}

fn line(out: &mut BytesMut, words: &[&[u8]]) {
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        out.put_slice(word);
    }
    out.put_u8(b'\n');
}

fn sized(out: &mut BytesMut, body: &[u8]) {
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

pub fn identify(out: &mut BytesMut, json: &[u8]) {
    line(out, &[b"IDENTIFY"]);
    sized(out, json);
}

pub fn auth(out: &mut BytesMut, secret: &[u8]) {
    line(out, &[b"AUTH"]);
    sized(out, secret);
}

pub fn publish(out: &mut BytesMut, topic: &str, body: &[u8]) {
    line(out, &[b"PUB", topic.as_bytes()]);
    sized(out, body);
}

pub fn multi_publish(out: &mut BytesMut, topic: &str, bodies: &[Vec<u8>]) {
    line(out, &[b"MPUB", topic.as_bytes()]);
    let sizes: usize = bodies.iter().map(|body| 4 + body.len()).sum();
    out.put_u32((4 + sizes) as u32);
    out.put_u32(bodies.len() as u32);
    for body in bodies {
        sized(out, body);
    }
}

pub fn subscribe(out: &mut BytesMut, topic: &str, channel: &str) {
    line(out, &[b"SUB", topic.as_bytes(), channel.as_bytes()]);
}

pub fn ready(out: &mut BytesMut, count: u32) {
    line(out, &[b"RDY", count.to_string().as_bytes()]);
}

pub fn finish(out: &mut BytesMut, id: &[u8]) {
    line(out, &[b"FIN", id]);
}

pub fn nop(out: &mut BytesMut) {
    line(out, &[b"NOP"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpub_declares_the_size_of_everything_after_it() {
        let mut out = BytesMut::new();
        multi_publish(&mut out, "t", &[b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(&out[..7], b"MPUB t\n");
        let declared = u32::from_be_bytes([out[7], out[8], out[9], out[10]]) as usize;
        assert_eq!(declared, out.len() - 11);
        assert_eq!(&out[11..15], &2u32.to_be_bytes());
    }

    #[test]
    fn frames_are_taken_only_when_complete() {
        let mut buf = BytesMut::new();
        buf.put_u32(6);
        buf.put_u32(FRAME_RESPONSE);
        buf.put_slice(b"O");
        assert!(matches!(take_frame(&mut buf), Ok(None)));
        buf.put_slice(b"K");
        let frame = take_frame(&mut buf).ok().flatten();
        assert_eq!(frame.map(|f| f.data.to_vec()), Some(b"OK".to_vec()));
        assert!(buf.is_empty());
    }
}
