//! Framing flavors: how a link delimits (and protects) the messages it carries, chosen by the
//! link rather than baked into every message (postcard's flavors, applied to frames).
//!
//! - [`Framing::Stream`]: `COBS(header ++ payload ++ crc32_le) ++ 0x00`, for byte streams that
//!   can corrupt, drop or split bytes (a serial port, a TCP socket read byte by byte).
//! - [`Framing::Packet`]: `u16_le(len) ++ header ++ payload`, for transports that deliver a
//!   message whole and intact (an in-process hand-over, a datagram protocol with its own
//!   integrity check). No stuffing and no CRC: only the length a reader needs to split them.
//!
//! Both carry the same `header ++ payload` bytes, checked by the same second layer, so a
//! message's payload bytes do not depend on the link it crossed.

use super::WireError;
use super::frame::{Frame, HEADER_LEN, Kind, PROTOCOL_MAJOR, PROTOCOL_MINOR, encode_frame_raw};

/// Bytes of a packet's length prefix.
pub const PACKET_LEN_BYTES: usize = 2;

/// How messages are delimited on a link (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// COBS frames with a CRC-32 trailer and a `0x00` delimiter: serial links and byte streams.
    #[default]
    Stream,
    /// Length-prefixed packets: links that deliver messages whole and uncorrupted.
    Packet,
}

impl Framing {
    /// Writes one message with `header` into `buf` in this framing, `write_payload` filling
    /// the payload slice it is given and returning its length. Returns the bytes written; the
    /// message is `buf[..len]`. `buf` sized by `frame_buf_len` fits either framing.
    pub fn encode_raw(
        self,
        header: [u8; HEADER_LEN],
        buf: &mut [u8],
        write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError> {
        match self {
            Framing::Stream => encode_frame_raw(header, buf, write_payload),
            Framing::Packet => encode_packet(header, buf, write_payload),
        }
    }

    /// Bytes this framing added to a message of `body` bytes (header plus payload) that it
    /// wrote as `encoded` bytes.
    pub const fn overhead(self, body: usize, encoded: usize) -> usize {
        match self {
            Framing::Stream => encoded - body,
            Framing::Packet => PACKET_LEN_BYTES,
        }
    }
}

/// Writes whole frames: a [`Framing`], or an authenticated session that seals what it writes
/// ([`super::auth::Session`]). The encoders that stream several frames (updates, item rows)
/// take one, so a sealed link reuses them frame for frame.
pub trait FrameWriter {
    /// Writes one frame of `kind` into `buf`, `payload` filling the payload slice it is given
    /// and returning its length; returns the bytes written (the frame is `buf[..len]`).
    fn write_frame(
        &mut self,
        kind: Kind,
        buf: &mut [u8],
        payload: &mut dyn FnMut(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError>;
}

impl FrameWriter for Framing {
    fn write_frame(
        &mut self,
        kind: Kind,
        buf: &mut [u8],
        payload: &mut dyn FnMut(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError> {
        self.encode_raw([PROTOCOL_MAJOR, PROTOCOL_MINOR, kind as u8], buf, payload)
    }
}

fn encode_packet(
    header: [u8; HEADER_LEN],
    buf: &mut [u8],
    write_payload: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    let start = PACKET_LEN_BYTES + HEADER_LEN;
    let too_small = WireError::BufferTooSmall {
        need: start,
        have: buf.len(),
    };
    if buf.len() < start {
        return Err(too_small);
    }
    // The payload may not make the packet longer than its u16 length can say.
    let room = buf.len().min(PACKET_LEN_BYTES + usize::from(u16::MAX));
    let p = write_payload(&mut buf[start..room])?;
    if p > room - start {
        return Err(WireError::Encode);
    }
    let body = HEADER_LEN + p;
    buf[..PACKET_LEN_BYTES].copy_from_slice(&(body as u16).to_le_bytes());
    buf[PACKET_LEN_BYTES..start].copy_from_slice(&header);
    Ok(PACKET_LEN_BYTES + body)
}

/// Splits the next packet off `input` and checks it (layer one without a CRC: length,
/// version, kind). The frame borrows `input`: nothing is copied. A packet whose body is longer
/// than `max` is refused as [`WireError::TooLarge`] unread; one that runs past the end of
/// `input` is [`WireError::Truncated`]. Returns the bytes consumed and the frame or the error.
pub fn next_packet(input: &[u8], max: usize) -> (usize, Result<Frame<'_>, WireError>) {
    let Some((len, rest)) = input.split_first_chunk::<PACKET_LEN_BYTES>() else {
        return (input.len(), Err(WireError::Truncated));
    };
    let len = usize::from(u16::from_le_bytes(*len));
    if len > max {
        return (input.len(), Err(WireError::TooLarge { len, max }));
    }
    if len > rest.len() {
        return (input.len(), Err(WireError::Truncated));
    }
    (PACKET_LEN_BYTES + len, Frame::check_body(&rest[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Kind, PROTOCOL_MAJOR, PROTOCOL_MINOR, frame_buf_len, next_frame};

    const HEADER: [u8; HEADER_LEN] = [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::Hello as u8];

    fn payload(out: &mut [u8]) -> Result<usize, WireError> {
        out[..4].copy_from_slice(&[0, 1, 0, 2]);
        Ok(4)
    }

    #[test]
    fn both_framings_carry_the_same_header_and_payload() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let n = Framing::Stream.encode_raw(HEADER, &mut a, payload).unwrap();
        let m = Framing::Packet.encode_raw(HEADER, &mut b, payload).unwrap();
        assert_eq!(m, PACKET_LEN_BYTES + HEADER_LEN + 4);
        let mut scratch = [0u8; 64];
        let (used, f) = next_frame(&a[..n], &mut scratch);
        let stream = f.unwrap().unwrap();
        assert_eq!(used, n);
        let (used, packet) = next_packet(&b[..m], 64);
        assert_eq!(used, m);
        assert_eq!(packet.unwrap(), stream);
        assert_eq!(
            Framing::Stream.overhead(HEADER_LEN + 4, n),
            n - HEADER_LEN - 4
        );
    }

    #[test]
    fn packets_are_refused_when_short_long_or_damaged() {
        let mut b = [0u8; 64];
        let m = Framing::Packet.encode_raw(HEADER, &mut b, payload).unwrap();
        assert_eq!(next_packet(&b[..1], 64).1, Err(WireError::Truncated));
        assert_eq!(next_packet(&b[..m - 1], 64).1, Err(WireError::Truncated));
        assert_eq!(
            next_packet(&b[..m], 5).1,
            Err(WireError::TooLarge { len: 7, max: 5 })
        );
        let mut bad = b;
        bad[PACKET_LEN_BYTES] = PROTOCOL_MAJOR + 1;
        assert!(matches!(
            next_packet(&bad[..m], 64).1,
            Err(WireError::UnsupportedVersion { .. })
        ));
        bad = b;
        bad[..2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(next_packet(&bad[..m], 64).1, Err(WireError::Truncated));
        assert!(frame_buf_len(0) >= PACKET_LEN_BYTES + HEADER_LEN);
    }

    #[test]
    fn a_packet_never_outgrows_its_length_prefix() {
        let mut big = [0u8; 70_000];
        let r = Framing::Packet.encode_raw(HEADER, &mut big, |out| Ok(out.len() + 1));
        assert_eq!(r, Err(WireError::Encode));
        let n = Framing::Packet
            .encode_raw(HEADER, &mut big, |out| Ok(out.len()))
            .unwrap();
        assert_eq!(n, PACKET_LEN_BYTES + usize::from(u16::MAX));
    }
}
