//! One TLS session over rustls's unbuffered API, with every buffer owned here instead of inside
//! rustls: the records read and not yet processed, the plaintext not yet taken, the records not
//! yet sent. Each is given back when it empties, so an idle session holds none of them (the
//! buffered API keeps a 4 KiB record buffer for the session's life). No I/O here: the caller
//! feeds bytes read and sends [`Session::outgoing`].

use std::ops::DerefMut;

use bytes::{Buf, BytesMut};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::CommonState;
use tokio::io::ReadBuf;

/// The two unbuffered connection kinds, driven alike.
pub trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// Where processing the records at hand stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The handshake waits for more bytes from the peer.
    Handshaking,
    /// The handshake is done and every whole record at hand is processed.
    Open,
    /// close_notify went both ways: nothing more can be sent or received.
    Closed,
}

/// What to do once the session can send application data.
enum Intent<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

pub struct Session<C> {
    conn: C,
    /// Bytes read but not yet processed: a record cut short by the read, or handshake records
    /// rustls is joining into one message. Usually empty, and then without capacity.
    incoming: BytesMut,
    /// Decrypted bytes the reader has not taken yet (a record larger than its read).
    plaintext: BytesMut,
    /// Records to send, in order; `sent` of them already are.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer's close_notify came: the end of its stream, cleanly.
    peer_closed: bool,
    close_notify_queued: bool,
}

// === impl Session ===

impl<C: Side> Session<C> {
    pub fn new(conn: C) -> Session<C> {
        Session {
            conn,
            incoming: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            close_notify_queued: false,
        }
    }

    /// What the handshake settled: peer certificates, suite, version, ALPN, resumption.
    pub fn state(&self) -> &CommonState {
        &self.conn
    }

    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// Processes what is at hand without new bytes: the handshake's first flight, or records
    /// still queued after an earlier step.
    pub fn step(&mut self) -> Result<Progress, rustls::Error> {
        self.run_buffered(Intent::Nothing, None)
    }

    /// Processes `read`, bytes just read from the peer; plaintext goes to `into` first, what
    /// does not fit is kept for the next [`Session::take_plaintext`]. When nothing was left
    /// over, `read` is decrypted where it lies (a buffer of the caller's, on its stack).
    pub fn receive(
        &mut self,
        read: &mut [u8],
        into: Option<&mut ReadBuf<'_>>,
    ) -> Result<Progress, rustls::Error> {
        if self.incoming.is_empty() {
            let (consumed, result) = self.run(read, Intent::Nothing, into);
            if let Some(rest) = read.get(consumed..) {
                self.incoming.extend_from_slice(rest);
            }
            return result;
        }
        self.incoming.extend_from_slice(read);
        self.run_buffered(Intent::Nothing, into)
    }

    /// Encrypts `data` into the outgoing records; false while the handshake is not done.
    pub fn encrypt(&mut self, data: &[u8]) -> Result<bool, rustls::Error> {
        self.write_intent(Intent::Encrypt(data))
    }

    /// Queues a close_notify once; false while the handshake is not done.
    pub fn close_notify(&mut self) -> Result<bool, rustls::Error> {
        if self.close_notify_queued {
            return Ok(true);
        }
        let queued = self.write_intent(Intent::CloseNotify)?;
        self.close_notify_queued = queued;
        Ok(queued)
    }

    /// After a failure: the alert rustls queued for the peer, if any, goes to the outgoing
    /// records (a last word before the connection closes). Only what is queued is taken: a
    /// step past it would process the records that failed again.
    pub fn queue_alert(&mut self) {
        while CommonState::wants_write(&self.conn) {
            let UnbufferedStatus { state, .. } = self.conn.process(&mut self.incoming);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                return;
            };
            if encode_record(&mut encode, &mut self.outgoing).is_err() {
                return;
            }
        }
    }

    /// Copies decrypted bytes kept from earlier steps into `into`.
    pub fn take_plaintext(&mut self, into: &mut ReadBuf<'_>) {
        let n = self.plaintext.len().min(into.remaining());
        into.put_slice(&self.plaintext[..n]);
        self.plaintext.advance(n);
        if self.plaintext.is_empty() {
            self.plaintext = BytesMut::new();
        }
    }

    /// Bytes of buffer the session holds outside rustls (none while idle).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    pub fn has_plaintext(&self) -> bool {
        !self.plaintext.is_empty()
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    pub fn close_notify_queued(&self) -> bool {
        self.close_notify_queued
    }

    /// Records waiting to be sent.
    pub fn outgoing(&self) -> &[u8] {
        self.outgoing.get(self.sent..).unwrap_or_default()
    }

    /// `n` bytes of [`Session::outgoing`] went out; once all have, the buffer is given back.
    pub fn sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.outgoing.len());
        if self.sent == self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }

    fn write_intent(&mut self, intent: Intent<'_>) -> Result<bool, rustls::Error> {
        Ok(self.run_buffered(intent, None)? == Progress::Open)
    }

    /// [`Session::run`] over the kept bytes, keeping what it is not done with.
    fn run_buffered(
        &mut self,
        intent: Intent<'_>,
        into: Option<&mut ReadBuf<'_>>,
    ) -> Result<Progress, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (consumed, result) = self.run(&mut incoming, intent, into);
        incoming.advance(consumed.min(incoming.len()));
        // An emptied buffer is given back: an idle session holds no record buffer.
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        result
    }

    /// Runs rustls over `incoming` until it needs more bytes or can send application data,
    /// then acts on `intent`. Returns how many of `incoming`'s bytes it is done with (they
    /// must not be handed to it again, the others must, failed or not) and where it stopped.
    fn run(
        &mut self,
        incoming: &mut [u8],
        mut intent: Intent<'_>,
        mut into: Option<&mut ReadBuf<'_>>,
    ) -> (usize, Result<Progress, rustls::Error>) {
        let mut consumed = 0;
        loop {
            let unread = incoming.get_mut(consumed..).unwrap_or_default();
            let UnbufferedStatus { discard, state } = self.conn.process(unread);
            let outcome = match state {
                Ok(state) => act(
                    state,
                    &mut intent,
                    &mut into,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.peer_closed,
                ),
                Err(e) => Err(e),
            };
            consumed += discard;
            match outcome {
                Ok(None) => {}
                Ok(Some(progress)) => return (consumed, Ok(progress)),
                Err(e) => return (consumed, Err(e)),
            }
        }
    }
}

/// Acts on one state rustls reached; Some where [`Session::run`] stops.
fn act<Data>(
    state: ConnectionState<'_, '_, Data>,
    intent: &mut Intent<'_>,
    into: &mut Option<&mut ReadBuf<'_>>,
    plaintext: &mut BytesMut,
    outgoing: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<Option<Progress>, rustls::Error> {
    match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                deliver(record?.payload, into, plaintext);
            }
        }
        // Never accepted: no early data is configured.
        ConnectionState::ReadEarlyData(_) => {
            return Err(rustls::Error::General("early data, never accepted".into()))
        }
        ConnectionState::PeerClosed => *peer_closed = true,
        ConnectionState::Closed => {
            *peer_closed = true;
            return Ok(Some(Progress::Closed));
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_record(&mut encode, outgoing)?;
        }
        // The encoded records are queued in order before anything written later, so they
        // count as handed over; the caller sends them before it waits to read.
        ConnectionState::TransmitTlsData(transmit) => transmit.done(),
        ConnectionState::BlockedHandshake => return Ok(Some(Progress::Handshaking)),
        ConnectionState::WriteTraffic(mut traffic) => {
            match std::mem::replace(intent, Intent::Nothing) {
                Intent::Nothing => {}
                Intent::Encrypt(data) => append(outgoing, sealed_size(data), |out| {
                    traffic.encrypt(data, out).map_err(encrypt_shortfall)
                })
                .map_err(|()| rustls::Error::EncryptError)?,
                Intent::CloseNotify => append(outgoing, 64, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_shortfall)
                })
                .map_err(|()| rustls::Error::EncryptError)?,
            }
            return Ok(Some(Progress::Open));
        }
        // A state a later rustls adds: wait for the peer, as for the handshake.
        _ => return Ok(Some(Progress::Handshaking)),
    }
    Ok(None)
}

/// A record rustls has ready (handshake, alert, key update) onto the outgoing ones.
fn encode_record<Data>(
    encode: &mut EncodeTlsData<'_, Data>,
    outgoing: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    append(outgoing, 0, |out| match encode.encode(out) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(short)) => Err(Some(short.required_size)),
        Err(EncodeError::AlreadyEncoded) => Err(None),
    })
    .map_err(|()| rustls::Error::General("a TLS record encoded twice".into()))
}

/// Room for `data` as records: each adds at most a header, an explicit nonce or content
/// type, and a tag (29 bytes with TLS 1.2's AES-GCM); 64 leaves slack for others.
fn sealed_size(data: &[u8]) -> usize {
    data.len() + (data.len() / (16 * 1024) + 1) * 64
}

/// Plaintext into the reader's buffer while it has room, the rest kept for its next read.
fn deliver(payload: &[u8], into: &mut Option<&mut ReadBuf<'_>>, kept: &mut BytesMut) {
    let mut rest = payload;
    if let Some(into) = into.as_deref_mut() {
        if kept.is_empty() {
            let n = rest.len().min(into.remaining());
            into.put_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    kept.extend_from_slice(rest);
}

fn encrypt_shortfall(error: EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(short) => Some(short.required_size),
        _ => None,
    }
}

/// Lets `write` fill `room` bytes at the tail of `out`, growing it to the size it asks for
/// once if that was short. `write` says `Err(Some(size))` when the room was short, `Err(None)`
/// when it cannot write at all.
fn append(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let start = out.len();
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) => room = required,
            Err(None) => break,
        }
    }
    out.truncate(start);
    Err(())
}
