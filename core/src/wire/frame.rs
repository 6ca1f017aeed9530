//! Layer one of decoding: the checked view of a frame (length, CRC, version, kind), and the
//! frame encoder.
//!
//! A frame on the byte stream is `COBS(header ++ payload ++ crc32_le) ++ 0x00`, where
//! `header = [major, minor, kind]` and the CRC-32 covers header and payload.

use super::WireError;
use super::cobs;
use super::crc::{Crc32, crc32};
use super::framing::Framing;
use serde::Serialize;

/// Major protocol version: a frame with another major is refused with
/// [`WireError::UnsupportedVersion`]. 2: `Error.detail` became an `Option<u32>`; 3:
/// `RoundConfig.reconstruction` (WIRE.md "Version history").
pub const PROTOCOL_MAJOR: u8 = 3;
/// Minor protocol version: later minors may append fields at the end of a message, which
/// readers of an earlier minor ignore.
pub const PROTOCOL_MINOR: u8 = 1;
/// Bytes of the frame header (`major`, `minor`, `kind`).
pub const HEADER_LEN: usize = 3;
/// Bytes of the CRC-32 trailer.
pub const CRC_LEN: usize = 4;
/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;

/// The kind byte of a frame: which message its payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`super::Hello`]: capabilities, sent by both peers first.
    Hello = 1,
    /// [`super::RoundStart`]: the round's number, seed, configuration and encodings.
    RoundStart = 2,
    /// [`super::RowChunk`]: item rows, server to device.
    ItemRows = 3,
    /// [`super::RatingsChunk`]: a client's ratings, host to demo board.
    Ratings = 4,
    /// [`super::UpdateBegin`]: weight, metrics and row count of a client's update.
    UpdateBegin = 5,
    /// [`super::RowChunk`]: update row deltas, device to server.
    UpdateRows = 6,
    /// [`super::EvalReport`]: an evaluation round's metric sums.
    EvalReport = 7,
    /// [`super::TopKRequest`]: ask for the top-k items of the reconstructed user.
    TopKRequest = 8,
    /// [`super::TopKAnswer`]: the top-k items, best first.
    TopKAnswer = 9,
    /// [`super::ErrorMsg`]: the peer refused something.
    Error = 10,
    /// [`super::UpdateShape`]: which rows the next update carries (dense, padded), and its
    /// rounding.
    UpdateShape = 11,
    /// [`super::StoredData`]: the board's own stored dataset (count, digest).
    StoredData = 12,
    /// [`super::StoreRatings`]: keep the last upload as the board's own dataset.
    StoreRatings = 13,
}

impl Kind {
    /// All kinds, in code order.
    pub const ALL: [Kind; 13] = [
        Kind::Hello,
        Kind::RoundStart,
        Kind::ItemRows,
        Kind::Ratings,
        Kind::UpdateBegin,
        Kind::UpdateRows,
        Kind::EvalReport,
        Kind::TopKRequest,
        Kind::TopKAnswer,
        Kind::Error,
        Kind::UpdateShape,
        Kind::StoredData,
        Kind::StoreRatings,
    ];

    /// The kind with code `b`, if any.
    pub const fn from_u8(b: u8) -> Option<Kind> {
        if b >= 1 && b <= 13 {
            Some(Self::ALL[(b - 1) as usize])
        } else {
            None
        }
    }
}

/// A frame that passed layer one: long enough, CRC correct, our major version, known kind.
/// The payload has not been interpreted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Major version of the sender (always [`PROTOCOL_MAJOR`]).
    pub major: u8,
    /// Minor version of the sender.
    pub minor: u8,
    /// The message kind.
    pub kind: Kind,
    /// The postcard-encoded message.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks a COBS-decoded frame (header, payload, CRC trailer): length, then CRC, then
    /// version, then kind. CRC comes before version so corruption is reported as such;
    /// every protocol major keeps byte 0 = major and the CRC-32 trailer, so another major is
    /// still reported as [`WireError::UnsupportedVersion`].
    pub fn check(raw: &'a [u8]) -> Result<Self, WireError> {
        if raw.len() < HEADER_LEN + CRC_LEN {
            return Err(WireError::Truncated);
        }
        let (body, trailer) = raw.split_at(raw.len() - CRC_LEN);
        let received = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32(body);
        if computed != received {
            return Err(WireError::Crc { computed, received });
        }
        Self::check_body(body)
    }

    /// The checks after the integrity check: header length, version, kind. A
    /// [`Framing::Packet`](super::Framing::Packet) body has no CRC and gets only these.
    pub(crate) fn check_body(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if body[0] != PROTOCOL_MAJOR {
            return Err(WireError::UnsupportedVersion {
                got: body[0],
                supported: PROTOCOL_MAJOR,
            });
        }
        let kind = Kind::from_u8(body[2]).ok_or(WireError::UnknownKind { kind: body[2] })?;
        Ok(Frame {
            major: body[0],
            minor: body[1],
            kind,
            payload: &body[HEADER_LEN..],
        })
    }

    /// Requires the frame to be of `kind`.
    pub fn expect(&self, kind: Kind) -> Result<(), WireError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(WireError::UnexpectedKind {
                got: self.kind as u8,
                expected: kind as u8,
            })
        }
    }

    /// Layer two: decodes the payload as `T`, refusing payloads longer than `max` before
    /// reading them. Bytes after the message are an error for frames of our own minor version
    /// (or older) and ignored for newer minors (appended fields).
    pub fn parse<T: serde::Deserialize<'a>>(&self, max: usize) -> Result<T, WireError> {
        if self.payload.len() > max {
            return Err(WireError::TooLarge {
                len: self.payload.len(),
                max,
            });
        }
        let (msg, rest) =
            postcard::take_from_bytes::<T>(self.payload).map_err(|_| WireError::Decode)?;
        if !rest.is_empty() && !newer_minor(self.minor) {
            return Err(WireError::TrailingData);
        }
        Ok(msg)
    }
}

/// Whether `minor` is newer than ours (its messages may carry appended fields).
const fn newer_minor(minor: u8) -> bool {
    minor > PROTOCOL_MINOR
}

/// Bytes of a frame buffer that can encode (in place) or decode a frame whose payload is at
/// most `max_payload` bytes. Also the largest encoded frame, delimiter included, plus slack.
pub const fn frame_buf_len(max_payload: usize) -> usize {
    let raw = HEADER_LEN + max_payload + CRC_LEN;
    let mut cap = raw + raw / 254 + 2;
    while cap - cobs::in_place_offset(cap) < raw {
        cap += 1;
    }
    cap
}

/// Largest encoded frame, delimiter included, for a payload of at most `max_payload` bytes.
pub const fn max_frame_len(max_payload: usize) -> usize {
    cobs::max_encoded_len(HEADER_LEN + max_payload + CRC_LEN) + 1
}

/// Encodes one frame of `kind` into `buf`, with `write_payload` writing the payload into the
/// slice it is given and returning its length. Returns the encoded length, delimiter
/// included; the frame is `buf[..len]`.
pub fn encode_frame_with(
    kind: Kind,
    buf: &mut [u8],
    write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    encode_frame_with_in(Framing::Stream, kind, buf, write_payload)
}

/// [`encode_frame_with`] in any [`Framing`].
pub fn encode_frame_with_in(
    framing: Framing,
    kind: Kind,
    buf: &mut [u8],
    write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    framing.encode_raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR, kind as u8],
        buf,
        write_payload,
    )
}

/// [`encode_frame_with`] with an arbitrary header (another version, an unknown kind): for
/// testing peers against frames this build would never send.
pub fn encode_frame_raw(
    header: [u8; HEADER_LEN],
    buf: &mut [u8],
    write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    let cap = buf.len();
    let off = cobs::in_place_offset(cap);
    if cap < off + HEADER_LEN + CRC_LEN {
        return Err(WireError::BufferTooSmall {
            need: frame_buf_len(0),
            have: cap,
        });
    }
    buf[off..off + HEADER_LEN].copy_from_slice(&header);
    let room = cap - CRC_LEN - off - HEADER_LEN;
    let p = write_payload(&mut buf[off + HEADER_LEN..cap - CRC_LEN])?;
    if p > room {
        return Err(WireError::Encode);
    }
    let body = HEADER_LEN + p;
    let mut crc = Crc32::new();
    crc.update(&buf[off..off + body]);
    buf[off + body..off + body + CRC_LEN].copy_from_slice(&crc.finish().to_le_bytes());
    let n = cobs::encode_in_place(buf, off, body + CRC_LEN);
    buf[n] = DELIMITER;
    Ok(n + 1)
}

/// Encodes `msg` with postcard as one frame of `kind` into `buf` (see [`encode_frame_with`]).
pub fn encode_frame<T: Serialize + ?Sized>(
    kind: Kind,
    msg: &T,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    encode_frame_in(Framing::Stream, kind, msg, buf)
}

/// [`encode_frame`] in any [`Framing`].
pub fn encode_frame_in<T: Serialize + ?Sized>(
    framing: Framing,
    kind: Kind,
    msg: &T,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let have = buf.len();
    encode_frame_with_in(framing, kind, buf, |out| {
        postcard::to_slice(msg, out)
            .map(|s| s.len())
            .map_err(|e| match e {
                postcard::Error::SerializeBufferFull => WireError::BufferTooSmall {
                    need: have + 1,
                    have,
                },
                _ => WireError::Encode,
            })
    })
}

/// Writes `msg` with postcard into a frame's payload slice `out`; returns its length.
pub(crate) fn postcard_payload<T: Serialize + ?Sized>(
    msg: &T,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let have = out.len();
    postcard::to_slice(msg, out)
        .map(|s| s.len())
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => WireError::BufferTooSmall {
                need: have + 1,
                have,
            },
            _ => WireError::Encode,
        })
}

/// Splits the next frame off `input` and checks it (layer one), decoding the COBS stuffing
/// into `buf`. Leading `0x00` bytes (empty frames) are skipped.
///
/// Returns the bytes consumed (through the delimiter; all of `input` when it ends without one)
/// and the frame or the error. A frame longer than `buf` is refused as
/// [`WireError::TooLarge`] without being read; a missing delimiter is
/// [`WireError::Truncated`]. `Ok(None)` means `input` held nothing but delimiters.
pub fn next_frame<'b>(
    input: &[u8],
    buf: &'b mut [u8],
) -> (usize, Result<Option<Frame<'b>>, WireError>) {
    let (consumed, raw) = next_raw_frame(input, buf);
    (
        consumed,
        raw.and_then(|r| r.map(|r| Frame::check(r)).transpose()),
    )
}

/// [`next_frame`] without the layer-one check: the COBS-decoded frame (header, payload, CRC),
/// for the authentication layer ([`super::auth::Session::open`]), which checks it itself and
/// decrypts it in place.
pub fn next_raw_frame<'b>(
    input: &[u8],
    buf: &'b mut [u8],
) -> (usize, Result<Option<&'b mut [u8]>, WireError>) {
    let start = input.iter().position(|&b| b != 0).unwrap_or(input.len());
    if start == input.len() {
        return (input.len(), Ok(None));
    }
    let rest = &input[start..];
    let Some(len) = cobs::find_zero(rest) else {
        return (input.len(), Err(WireError::Truncated));
    };
    let consumed = start + len + 1;
    // The decoded frame is at most len - 1 bytes, but frames are refused by their encoded
    // length (what an in-place decoder needs to hold), so every reader agrees on the limit.
    if len > buf.len() {
        return (
            consumed,
            Err(WireError::TooLarge {
                len,
                max: buf.len(),
            }),
        );
    }
    let n = match cobs::decode(&rest[..len], buf) {
        Ok(n) => n,
        Err(e) => return (consumed, Err(e)),
    };
    (consumed, Ok(Some(&mut buf[..n])))
}
