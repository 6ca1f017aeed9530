//! Authenticated frames (WIRE.md section 7): a layer beside the framing that seals a frame
//! with a ChaCha20-Poly1305 (RFC 8439) tag under a per-session key, and opens it again,
//! refusing forged, altered, replayed, reordered and other devices' frames with an
//! [`AuthError`]. The payload stays in the clear (authentication, not confidentiality: on the
//! Cortex-M4F encrypting it too would cost 4.3× the instructions, WIRE.md 7.3).
//!
//! A session starts with one unsealed [`SessionOpen`] each way (the device names itself and
//! sends its nonce, the server answers with its fresh nonce); both derive the session key from
//! the device's enrolled [`DeviceKey`] and the two nonces ([`Session::new`]). Every later frame
//! is sealed: the kind byte has [`SEALED`] set, the payload is followed by the sender's frame
//! sequence (`u32` LE, 0, 1, 2, ... per direction) and the 16-byte tag over header, payload
//! and sequence, all inside the usual CRC-32 and COBS envelope. Receiving is a checked view
//! first ([`Session::open`]: CRC, version, sealed kind, tag, sequence), then the typed
//! [`Frame`], which [`Frame::parse`] and [`super::Message::decode`] read as before.
//! No allocation; every buffer is the caller's.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use core::fmt;
use serde::{Deserialize, Serialize};

use super::crc::crc32;
use super::{CRC_LEN, Frame, HEADER_LEN, Kind, PROTOCOL_MAJOR, PROTOCOL_MINOR, WireError};
use super::{ErrorCode, ErrorMsg, FrameWriter};
use super::{encode_frame_raw, frame_buf_len};

/// Bit set in the kind byte of a sealed frame.
pub const SEALED: u8 = 0x80;
/// Kind byte of a [`SessionOpen`] frame (never sealed; outside [`Kind`]'s codes).
pub const SESSION_OPEN: u8 = 0x40;
/// Bytes of the frame sequence number after a sealed payload.
pub const SEQ_LEN: usize = 4;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to a frame's raw length (sequence and tag; COBS may add one more per 254).
pub const SEAL_LEN: usize = SEQ_LEN + TAG_LEN;
/// Largest [`SessionOpen`] payload (postcard varints: `u32` ≤ 5, `u64` ≤ 10).
pub const SESSION_OPEN_MAX: usize = 15;

/// Bytes of a frame buffer that can seal or open a frame whose payload is at most
/// `max_payload` bytes (see [`frame_buf_len`]).
pub const fn sealed_frame_buf_len(max_payload: usize) -> usize {
    frame_buf_len(max_payload + SEAL_LEN)
}

/// A device's 32-byte secret, enrolled with the server and built or provisioned into the
/// device. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; 32]);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// The unsealed first frame each way: who the device says it is and the sender's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpen {
    /// The device's enrolled id (the server echoes it).
    pub device: u32,
    /// The sender's nonce: the server's must be fresh for every session (it is what makes
    /// an earlier session's frames fail); a device without a random source may count boots.
    pub nonce: u64,
}

impl SessionOpen {
    /// Encodes the frame into `buf`; returns the encoded length, delimiter included.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        encode_frame_raw([PROTOCOL_MAJOR, PROTOCOL_MINOR, SESSION_OPEN], buf, |p| {
            postcard::to_slice(self, p)
                .map(|s| s.len())
                .map_err(|_| WireError::BufferTooSmall {
                    need: sealed_frame_buf_len(SESSION_OPEN_MAX),
                    have: p.len(),
                })
        })
    }

    /// Reads a COBS-decoded frame as a `SessionOpen`: `Ok(None)` when it is a frame of another
    /// kind (sealed or not), an error when it is a malformed one.
    pub fn check(raw: &[u8]) -> Result<Option<SessionOpen>, AuthError> {
        let (header, payload) = envelope(raw)?;
        if header[2] != SESSION_OPEN {
            return Ok(None);
        }
        if payload.len() > SESSION_OPEN_MAX {
            return Err(WireError::TooLarge {
                len: payload.len(),
                max: SESSION_OPEN_MAX,
            }
            .into());
        }
        let (open, rest) =
            postcard::take_from_bytes::<SessionOpen>(payload).map_err(|_| WireError::Decode)?;
        if !rest.is_empty() && header[1] <= PROTOCOL_MINOR {
            return Err(WireError::TrailingData.into());
        }
        Ok(Some(open))
    }
}

/// Which end of the link a [`Session`] is: each direction has its own nonce space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server (or simulator, or host driving a board).
    Server,
    /// The device.
    Device,
}

impl Role {
    /// The direction byte of the frames this role sends.
    const fn tx(self) -> u8 {
        match self {
            Role::Server => b'S',
            Role::Device => b'D',
        }
    }

    const fn peer(self) -> Role {
        match self {
            Role::Server => Role::Device,
            Role::Device => Role::Server,
        }
    }
}

/// Why a frame was refused by the authentication layer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// The envelope failed before authentication (COBS, CRC, version, kind, size).
    Wire(WireError),
    /// A plain (unsealed) frame arrived where the session requires sealed ones.
    Unsealed {
        /// Its kind byte.
        kind: u8,
    },
    /// The tag does not verify: the frame was forged, altered on the way, or sealed under
    /// another session's or another device's key.
    BadTag,
    /// A sequence number already seen (or older): a replayed frame.
    Replayed {
        /// The frame's sequence number.
        seq: u32,
        /// The next sequence number the receiver accepts.
        expected: u32,
    },
    /// A sequence number beyond the next: frames were dropped or reordered on the way.
    Gap {
        /// The frame's sequence number.
        seq: u32,
        /// The next sequence number the receiver accepts.
        expected: u32,
    },
    /// The sender's sequence is exhausted (2³² frames): open a new session.
    Exhausted,
    /// A [`SessionOpen`] names a device the server has no key for.
    NotEnrolled {
        /// The device id it names.
        device: u32,
    },
    /// A [`SessionOpen`] names another device than the one the link belongs to (or the
    /// server's answer echoes another id).
    WrongDevice {
        /// The device the receiver expected.
        expected: u32,
        /// The device the frame names.
        got: u32,
    },
}

impl From<WireError> for AuthError {
    fn from(e: WireError) -> Self {
        AuthError::Wire(e)
    }
}

impl AuthError {
    /// A short stable name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::Wire(_) => "malformed",
            AuthError::Unsealed { .. } => "unsealed",
            AuthError::BadTag => "bad_tag",
            AuthError::Replayed { .. } => "replayed",
            AuthError::Gap { .. } => "sequence_gap",
            AuthError::Exhausted => "sequence_exhausted",
            AuthError::NotEnrolled { .. } => "not_enrolled",
            AuthError::WrongDevice { .. } => "wrong_device",
        }
    }
}

impl ErrorMsg {
    /// The message that reports an authentication refusal to the peer: the envelope's own
    /// errors as [`ErrorMsg::from_wire`], the others as [`ErrorCode::Unauthenticated`] with
    /// the reason's number as `detail` (WIRE.md 7.3).
    pub fn from_auth(round: u32, e: &AuthError) -> Self {
        let reason = match e {
            AuthError::Wire(w) => return ErrorMsg::from_wire(round, w),
            AuthError::Unsealed { .. } => 1,
            AuthError::BadTag => 2,
            AuthError::Replayed { .. } => 3,
            AuthError::Gap { .. } => 4,
            AuthError::Exhausted => 5,
            AuthError::NotEnrolled { .. } => 6,
            AuthError::WrongDevice { .. } => 7,
        };
        ErrorMsg {
            round,
            code: ErrorCode::Unauthenticated,
            detail: Some(reason),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Wire(e) => write!(f, "{e}"),
            AuthError::Unsealed { kind } => {
                write!(f, "unsealed frame (kind {kind}) on an authenticated link")
            }
            AuthError::BadTag => f.write_str(
                "frame tag does not verify (forged, altered, or sealed with another key)",
            ),
            AuthError::Replayed { seq, expected } => {
                write!(f, "replayed frame: sequence {seq}, expected {expected}")
            }
            AuthError::Gap { seq, expected } => {
                write!(f, "frames missing: sequence {seq}, expected {expected}")
            }
            AuthError::Exhausted => f.write_str("frame sequence exhausted: open a new session"),
            AuthError::NotEnrolled { device } => write!(f, "device {device} is not enrolled"),
            AuthError::WrongDevice { expected, got } => {
                write!(
                    f,
                    "frame names device {got}, the link belongs to device {expected}"
                )
            }
        }
    }
}

/// Checks what every frame shares (length, CRC, major) and splits it into header and body.
fn envelope(raw: &[u8]) -> Result<([u8; HEADER_LEN], &[u8]), WireError> {
    if raw.len() < HEADER_LEN + CRC_LEN {
        return Err(WireError::Truncated);
    }
    let (body, trailer) = raw.split_at(raw.len() - CRC_LEN);
    let received = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32(body);
    if computed != received {
        return Err(WireError::Crc { computed, received });
    }
    if body[0] != PROTOCOL_MAJOR {
        return Err(WireError::UnsupportedVersion {
            got: body[0],
            supported: PROTOCOL_MAJOR,
        });
    }
    Ok(([body[0], body[1], body[2]], &body[HEADER_LEN..]))
}

/// A session writes sealed frames, so every encoder that takes a [`FrameWriter`] (updates,
/// item rows, [`super::Message::encode_with`]) sends them sealed. An exhausted sequence is
/// [`WireError::InvalidValue`] here (open a new session).
impl FrameWriter for Session {
    fn write_frame(
        &mut self,
        kind: Kind,
        buf: &mut [u8],
        payload: &mut dyn FnMut(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError> {
        self.seal_frame_with(kind, buf, payload)
            .map_err(|e| match e {
                AuthError::Wire(w) => w,
                _ => WireError::InvalidValue {
                    what: "the session's frame sequence is exhausted: open a new session",
                },
            })
    }
}

/// One end of an authenticated link: the session key and both directions' sequences.
pub struct Session {
    aead: ChaCha20Poly1305,
    role: Role,
    device: u32,
    /// Sequence of the next frame this end seals.
    tx: u32,
    /// Sequence of the next frame this end accepts; `None` once the peer's are exhausted.
    rx: Option<u32>,
    /// Whether `tx` is exhausted.
    tx_done: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("device", &self.device)
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session of `device` (whose key is `key`) after the [`SessionOpen`] exchange: the
    /// session key is the first ChaCha20 block under the device key with nonce
    /// `server_nonce ‖ low 32 bits of device_nonce` (WIRE.md 7.2), so every session has its
    /// own key and an earlier session's frames fail the tag.
    pub fn new(key: &DeviceKey, role: Role, device: u32, server: u64, device_nonce: u64) -> Self {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&server.to_le_bytes());
        nonce[8..].copy_from_slice(&(device_nonce as u32).to_le_bytes());
        let mut session_key = [0u8; 32];
        // ChaCha20-Poly1305 encrypts with block counter 1 onward, so the ciphertext of 32
        // zero bytes is that block's keystream: a PRF of (device key, nonces). Encrypting
        // 32 bytes cannot fail.
        let _tag = ChaCha20Poly1305::new(&key.0.into()).encrypt_inout_detached(
            &Nonce::from(nonce),
            &[],
            (&mut session_key[..]).into(),
        );
        let aead = ChaCha20Poly1305::new(&session_key.into());
        Session {
            aead,
            role,
            device,
            tx: 0,
            rx: Some(0),
            tx_done: false,
        }
    }

    /// The device this session belongs to.
    pub fn device(&self) -> u32 {
        self.device
    }

    /// The AEAD nonce of frame `seq` sent by `dir` with `header`:
    /// `dir ‖ major ‖ minor ‖ kind ‖ seq (LE) ‖ 0 0 0 0` (unique per direction and frame; the
    /// header in it is authenticated, since the tag's one-time key derives from the nonce).
    fn nonce(dir: u8, header: [u8; HEADER_LEN], seq: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[0] = dir;
        n[1..4].copy_from_slice(&header);
        n[4..8].copy_from_slice(&seq.to_le_bytes());
        n
    }

    /// Seals and encodes one frame of `kind` into `buf` (size it with
    /// [`sealed_frame_buf_len`]), `write_payload` writing the plaintext payload into the slice
    /// it is given and returning its length. Returns the encoded length, delimiter included.
    pub fn seal_frame_with(
        &mut self,
        kind: Kind,
        buf: &mut [u8],
        write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, AuthError> {
        if self.tx_done {
            return Err(AuthError::Exhausted);
        }
        let header = [PROTOCOL_MAJOR, PROTOCOL_MINOR, kind as u8 | SEALED];
        let seq = self.tx;
        let (aead, dir) = (&self.aead, self.role.tx());
        let len = encode_frame_raw(header, buf, |p| {
            let n = write_payload(p)?;
            if p.len() < n + SEAL_LEN {
                return Err(WireError::BufferTooSmall {
                    need: sealed_frame_buf_len(n),
                    have: p.len(),
                });
            }
            p[n..n + SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
            let (authenticated, rest) = p.split_at_mut(n + SEQ_LEN);
            // The tag of an empty plaintext with `payload ‖ seq` as associated data.
            let tag = aead
                .encrypt_inout_detached(
                    &Self::nonce(dir, header, seq).into(),
                    authenticated,
                    (&mut [][..]).into(),
                )
                .map_err(|_| WireError::TooLarge { len: n, max: n })?;
            rest[..TAG_LEN].copy_from_slice(&tag);
            Ok(n + SEAL_LEN)
        })?;
        match self.tx.checked_add(1) {
            Some(next) => self.tx = next,
            None => self.tx_done = true,
        }
        Ok(len)
    }

    /// [`Self::seal_frame_with`] for a serializable message.
    pub fn seal_frame<T: Serialize>(
        &mut self,
        kind: Kind,
        msg: &T,
        buf: &mut [u8],
    ) -> Result<usize, AuthError> {
        self.seal_frame_with(kind, buf, |p| {
            let have = p.len();
            postcard::to_slice(msg, p)
                .map(|s| s.len())
                .map_err(|_| WireError::BufferTooSmall {
                    need: have + 1,
                    have,
                })
        })
    }

    /// Opens a COBS-decoded sealed frame: envelope (length, CRC, major), sealed kind, tag,
    /// then sequence (the next expected: older is [`AuthError::Replayed`], newer
    /// [`AuthError::Gap`]); returns the plain [`Frame`]. A refused frame leaves the session as
    /// it was (the next genuine frame still opens).
    pub fn open<'a>(&mut self, raw: &'a [u8]) -> Result<Frame<'a>, AuthError> {
        let (header, body) = envelope(raw)?;
        if header[2] & SEALED == 0 {
            return Err(AuthError::Unsealed { kind: header[2] });
        }
        let kind =
            Kind::from_u8(header[2] & !SEALED).ok_or(WireError::UnknownKind { kind: header[2] })?;
        if body.len() < SEAL_LEN {
            return Err(WireError::Truncated.into());
        }
        let n = body.len() - SEAL_LEN;
        let seq_bytes = [body[n], body[n + 1], body[n + 2], body[n + 3]];
        let seq = u32::from_le_bytes(seq_bytes);
        let expected = self.rx.ok_or(AuthError::Exhausted)?;
        let mut tag = Tag::default();
        tag.copy_from_slice(&body[n + SEQ_LEN..n + SEAL_LEN]);
        self.aead
            .decrypt_inout_detached(
                &Self::nonce(self.role.peer().tx(), header, seq).into(),
                &body[..n + SEQ_LEN],
                (&mut [][..]).into(),
                &tag,
            )
            .map_err(|_| AuthError::BadTag)?;
        // The tag covers the sequence number, so only a genuine frame gets this far: an
        // older one is a replay, a newer one means frames were lost or held back.
        if seq < expected {
            return Err(AuthError::Replayed { seq, expected });
        }
        if seq > expected {
            return Err(AuthError::Gap { seq, expected });
        }
        self.rx = seq.checked_add(1);
        Ok(Frame {
            major: header[0],
            minor: header[1],
            kind,
            payload: &raw[HEADER_LEN..HEADER_LEN + n],
        })
    }
}
