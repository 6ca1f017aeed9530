//! Frames from a byte stream read piecewise (a UART): postcard's `CobsAccumulator` pattern,
//! with the CRC and version checks of [`Frame::check`] before anything is deserialized.

use super::WireError;
use super::cobs;
use super::frame::{DELIMITER, Frame};

/// Collects bytes up to each `0x00` delimiter into a buffer of `N` bytes (use
/// [`super::max_frame_buf_len`]`(K)`), then checks the frame. A frame longer than `N` is
/// discarded up to its delimiter and reported as [`WireError::TooLarge`], so a bad peer can
/// neither overflow the buffer nor desynchronize the reader for more than one frame.
#[derive(Debug, Clone)]
pub struct FrameAccumulator<const N: usize> {
    buf: [u8; N],
    /// Bytes of the current frame seen so far (may exceed `N` while discarding).
    len: usize,
}

/// The result of [`FrameAccumulator::feed`].
#[derive(Debug)]
pub enum Feed<'a, 'b> {
    /// All input was consumed without completing a frame.
    Consumed,
    /// A frame passed layer one; `rest` is the input after its delimiter.
    Frame {
        /// The checked frame (borrows the accumulator until the next feed).
        frame: Frame<'b>,
        /// Unconsumed input.
        rest: &'a [u8],
    },
    /// A frame was refused; `rest` is the input after its delimiter.
    Error {
        /// Why.
        error: WireError,
        /// Unconsumed input.
        rest: &'a [u8],
    },
}

/// The result of [`FrameAccumulator::feed_raw`]: as [`Feed`], without the layer-one check.
#[derive(Debug)]
pub enum FeedRaw<'a, 'b> {
    /// All input was consumed without completing a frame.
    Consumed,
    /// A frame was delimited and COBS-decoded; `rest` is the input after its delimiter.
    Frame {
        /// The decoded frame (header, payload, CRC), for the authentication layer
        /// ([`super::auth::Session::open`]) or [`Frame::check`].
        raw: &'b [u8],
        /// Unconsumed input.
        rest: &'a [u8],
    },
    /// A frame was refused (too large, bad COBS); `rest` is the input after its delimiter.
    Error {
        /// Why.
        error: WireError,
        /// Unconsumed input.
        rest: &'a [u8],
    },
}

impl<const N: usize> Default for FrameAccumulator<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameAccumulator<N> {
    /// An empty accumulator (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Forgets a partially received frame.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Consumes input up to and including the next frame's delimiter. Call again with
    /// `rest` until [`Feed::Consumed`]. Empty frames (consecutive delimiters) are skipped.
    pub fn feed<'a, 'b>(&'b mut self, input: &'a [u8]) -> Feed<'a, 'b> {
        match self.feed_raw(input) {
            FeedRaw::Consumed => Feed::Consumed,
            FeedRaw::Frame { raw, rest } => match Frame::check(raw) {
                Ok(frame) => Feed::Frame { frame, rest },
                Err(error) => Feed::Error { error, rest },
            },
            FeedRaw::Error { error, rest } => Feed::Error { error, rest },
        }
    }

    /// [`Self::feed`] without the layer-one check: the COBS-decoded frame, for a link whose
    /// frames are sealed (WIRE.md 7), which checks them itself.
    pub fn feed_raw<'a, 'b>(&'b mut self, input: &'a [u8]) -> FeedRaw<'a, 'b> {
        let mut input = input;
        loop {
            let Some(z) = input.iter().position(|&b| b == DELIMITER) else {
                self.push(input);
                return FeedRaw::Consumed;
            };
            self.push(&input[..z]);
            let rest = &input[z + 1..];
            let len = core::mem::replace(&mut self.len, 0);
            if len == 0 {
                input = rest;
                continue;
            }
            if len > N {
                return FeedRaw::Error {
                    error: WireError::TooLarge { len, max: N },
                    rest,
                };
            }
            return match cobs::decode_in_place(&mut self.buf, len) {
                Ok(n) => FeedRaw::Frame {
                    raw: &self.buf[..n],
                    rest,
                },
                Err(error) => FeedRaw::Error { error, rest },
            };
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if end <= N {
            self.buf[self.len..end].copy_from_slice(bytes);
        }
        self.len = end;
    }
}
