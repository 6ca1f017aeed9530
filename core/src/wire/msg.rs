//! The messages of the protocol (one per frame kind), their maximum sizes, and the typed
//! layer of decoding ([`Message::decode`]).

use super::frame::{Frame, Kind, encode_frame, frame_buf_len, postcard_payload};
use super::framing::{FrameWriter, Framing};
use super::owned::{StoreRatings, StoredData};
use super::rows::{RowChunk, RowEncoding, row_chunk_max_payload, varint_len};
use super::shape::UpdateShape;
use super::update::UpdateBegin;
use super::{EncodeError, WireError};
use crate::model::{Metrics, RoundConfig};
use crate::scalar::ScalarKind;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Ratings per [`RatingsChunk`].
pub const RATINGS_PER_CHUNK: usize = 64;
/// Most items a [`TopKAnswer`] carries.
pub const TOP_K_MAX: usize = 32;

/// A protocol version (the frame header carries the sender's; [`Hello`] repeats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions (fields appended to messages).
    pub minor: u8,
}

/// A firmware (or simulator) release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, MaxSize)]
pub struct FirmwareVersion {
    /// Semantic version major.
    pub major: u16,
    /// Semantic version minor.
    pub minor: u16,
    /// Semantic version patch.
    pub patch: u16,
    /// Build identifier (e.g. the first 4 bytes of the commit hash).
    pub build: u32,
}

/// Bit of [`Hello::encodings`] for each [`RowEncoding`].
pub const fn encoding_bit(e: RowEncoding) -> u8 {
    match e {
        RowEncoding::F32 => 1,
        RowEncoding::I16 => 2,
        RowEncoding::I8 => 4,
    }
}

/// Capabilities, sent by each peer first (kind 1). A peer refuses a round whose `K`, scalar
/// or capacities it cannot meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub protocol: Version,
    /// The sender's scalar type.
    pub scalar: ScalarKind,
    /// Embedding width `K`.
    pub k: u32,
    /// Most ratings a client dataset may hold (the device's `N`).
    pub max_examples: u32,
    /// Most item rows the device can cache for a round.
    pub max_rows: u32,
    /// Largest encoded frame (delimiter included) the sender can receive.
    pub max_frame: u32,
    /// Row encodings accepted (bit set of [`encoding_bit`]).
    pub encodings: u8,
    /// The sender's firmware version.
    pub firmware: FirmwareVersion,
}

/// What a round asks the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, MaxSize)]
pub enum RoundMode {
    /// Reconstruct and train; answer with an update.
    #[default]
    Train,
    /// Reconstruct and evaluate; answer with an [`EvalReport`].
    Evaluate,
    /// Reconstruct from every rating; then answer [`TopKRequest`]s.
    Reconstruct,
}

/// Start of a round (kind 2, sequence 0 of the item-row stream that follows).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct RoundStart {
    /// The round number.
    pub round: u32,
    /// The client's seed for this round (user-embedding initialisation).
    pub seed: u64,
    /// What to do.
    pub mode: RoundMode,
    /// Every hyperparameter of the round.
    pub config: RoundConfig,
    /// Items in the model (valid ids `0..num_items`).
    pub num_items: u32,
    /// Item rows that follow as `ItemRows` chunks numbered 1, 2, ...
    pub rows: u32,
    /// Encoding of the item rows sent to the device.
    pub down: RowEncoding,
    /// Encoding the device must use for its update.
    pub up: RowEncoding,
}

/// One rating of a client (for provisioning a demo board).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct Rating {
    /// Item id.
    pub item: u32,
    /// The rating.
    pub rating: f32,
}

/// Up to [`RATINGS_PER_CHUNK`] of a client's ratings (kind 4), host to board. Chunks are
/// numbered 0, 1, 2, ... and each repeats the total, so the board knows when it has all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingsChunk {
    /// Chunk sequence number, from 0.
    pub seq: u32,
    /// Ratings in the whole upload.
    pub total: u32,
    /// This chunk's ratings (full chunks except the last).
    pub ratings: heapless::Vec<Rating, RATINGS_PER_CHUNK>,
}

impl MaxSize for RatingsChunk {
    const POSTCARD_MAX_SIZE: usize = 2 * u32::POSTCARD_MAX_SIZE
        + varint_len(RATINGS_PER_CHUNK)
        + RATINGS_PER_CHUNK * Rating::POSTCARD_MAX_SIZE;
}

/// An evaluation round's result (kind 7).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct EvalReport {
    /// The round number.
    pub round: u32,
    /// The client id.
    pub client: u32,
    /// Metric sums over the evaluation half.
    pub metrics: Metrics,
}

/// Ask for the `k` best unrated items of the reconstructed user (kind 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct TopKRequest {
    /// The round whose reconstruction to use.
    pub round: u32,
    /// How many items, `1..=TOP_K_MAX`.
    pub k: u16,
}

/// One ranked item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct Scored {
    /// Item id.
    pub item: u32,
    /// Predicted rating.
    pub score: f32,
}

/// The top-k items, best first (kind 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKAnswer {
    /// The round of the request.
    pub round: u32,
    /// At most [`TOP_K_MAX`] items, best first.
    pub items: heapless::Vec<Scored, TOP_K_MAX>,
}

impl MaxSize for TopKAnswer {
    const POSTCARD_MAX_SIZE: usize =
        u32::POSTCARD_MAX_SIZE + varint_len(TOP_K_MAX) + TOP_K_MAX * Scored::POSTCARD_MAX_SIZE;
}

/// Why a peer refused (the `code` of an [`ErrorMsg`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum ErrorCode {
    /// Another major protocol version (`detail` = the major received).
    UnsupportedVersion,
    /// A frame failed its CRC.
    Crc,
    /// A frame or a stream was cut short.
    Truncated,
    /// A frame exceeded the receiver's maximum (`detail` = its length).
    TooLarge,
    /// Malformed COBS.
    Cobs,
    /// Unknown kind (`detail` = the kind byte).
    UnknownKind,
    /// A kind not allowed now (`detail` = the kind byte).
    UnexpectedKind,
    /// A lost or reordered chunk (`detail` = the sequence number expected).
    BadChunkSequence,
    /// Another `K` (`detail` = the `K` of the peer sending the `Error`, the one refusing).
    DimensionMismatch,
    /// An undecodable payload.
    Decode,
    /// Bytes after a message.
    TrailingData,
    /// An invalid field value.
    InvalidValue,
    /// A device buffer is too small for the request (`detail` = its capacity).
    CapacityExceeded,
    /// The round's configuration is invalid.
    InvalidConfig,
    /// The round failed on the device (empty split, missing row, out-of-range item, ...).
    RoundFailed,
    /// Anything else.
    Other,
    /// A frame refused by the authentication layer (WIRE.md 7; `detail`: 1 unsealed, 2 bad
    /// tag, 3 replayed, 4 sequence gap, 5 sequence exhausted, 6 not enrolled, 7 wrong device).
    Unauthenticated,
}

/// A refusal (kind 10). `detail` is a code-specific number (see [`ErrorCode`]), `None` when
/// the code has none: an `Option` so that "no detail" and "item 0" differ on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct ErrorMsg {
    /// The round concerned (0 if none).
    pub round: u32,
    /// Why.
    pub code: ErrorCode,
    /// Code-specific detail, if the code has one for this refusal.
    pub detail: Option<u32>,
}

impl ErrorMsg {
    /// The message that reports `e` to the peer.
    pub fn from_wire(round: u32, e: &WireError) -> Self {
        let (code, detail) = match *e {
            WireError::Crc { .. } => (ErrorCode::Crc, None),
            WireError::Truncated => (ErrorCode::Truncated, None),
            WireError::TooLarge { len, .. } => (ErrorCode::TooLarge, Some(len as u32)),
            WireError::Cobs => (ErrorCode::Cobs, None),
            WireError::UnsupportedVersion { got, .. } => {
                (ErrorCode::UnsupportedVersion, Some(u32::from(got)))
            }
            WireError::UnknownKind { kind } => (ErrorCode::UnknownKind, Some(u32::from(kind))),
            WireError::UnexpectedKind { got, .. } => {
                (ErrorCode::UnexpectedKind, Some(u32::from(got)))
            }
            WireError::BadChunkSequence { expected, .. } => {
                (ErrorCode::BadChunkSequence, Some(expected))
            }
            WireError::DimensionMismatch { expected, .. } => {
                (ErrorCode::DimensionMismatch, Some(expected))
            }
            WireError::Decode => (ErrorCode::Decode, None),
            WireError::TrailingData => (ErrorCode::TrailingData, None),
            WireError::InvalidValue { .. } => (ErrorCode::InvalidValue, None),
            WireError::BufferTooSmall { have, .. } => {
                (ErrorCode::CapacityExceeded, Some(have as u32))
            }
            WireError::Encode => (ErrorCode::Other, None),
        };
        Self {
            round,
            code,
            detail,
        }
    }

    /// The message that reports a failed round to the peer.
    pub fn from_core(round: u32, e: &crate::Error) -> Self {
        let (code, detail) = match *e {
            crate::Error::CapacityExceeded { capacity, .. } => {
                (ErrorCode::CapacityExceeded, Some(capacity as u32))
            }
            crate::Error::InvalidConfig { .. } => (ErrorCode::InvalidConfig, None),
            crate::Error::ItemOutOfRange { item, .. } | crate::Error::MissingItemRow { item } => {
                (ErrorCode::RoundFailed, Some(item))
            }
            _ => (ErrorCode::RoundFailed, None),
        };
        Self {
            round,
            code,
            detail,
        }
    }
}

/// Any message, as decoded from one frame. Row chunks borrow the frame buffer.
// No alloc, so no boxing: a decoded message is one stack value of the largest variant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// Kind 1.
    Hello(Hello),
    /// Kind 2.
    RoundStart(RoundStart),
    /// Kind 3.
    ItemRows(RowChunk<'a>),
    /// Kind 4.
    Ratings(RatingsChunk),
    /// Kind 5.
    UpdateBegin(UpdateBegin),
    /// Kind 6.
    UpdateRows(RowChunk<'a>),
    /// Kind 7.
    EvalReport(EvalReport),
    /// Kind 8.
    TopKRequest(TopKRequest),
    /// Kind 9.
    TopKAnswer(TopKAnswer),
    /// Kind 10.
    Error(ErrorMsg),
    /// Kind 11.
    UpdateShape(UpdateShape),
    /// Kind 12.
    StoredData(StoredData),
    /// Kind 13.
    StoreRatings(StoreRatings),
}

/// The largest postcard payload of a message of `kind` at width `k`.
pub const fn max_payload(kind: Kind, k: usize) -> usize {
    match kind {
        Kind::Hello => Hello::POSTCARD_MAX_SIZE,
        Kind::RoundStart => RoundStart::POSTCARD_MAX_SIZE,
        Kind::ItemRows | Kind::UpdateRows => row_chunk_max_payload(k),
        Kind::Ratings => RatingsChunk::POSTCARD_MAX_SIZE,
        Kind::UpdateBegin => UpdateBegin::POSTCARD_MAX_SIZE,
        Kind::EvalReport => EvalReport::POSTCARD_MAX_SIZE,
        Kind::TopKRequest => TopKRequest::POSTCARD_MAX_SIZE,
        Kind::TopKAnswer => TopKAnswer::POSTCARD_MAX_SIZE,
        Kind::Error => ErrorMsg::POSTCARD_MAX_SIZE,
        Kind::UpdateShape => UpdateShape::POSTCARD_MAX_SIZE,
        Kind::StoredData => StoredData::POSTCARD_MAX_SIZE,
        Kind::StoreRatings => StoreRatings::POSTCARD_MAX_SIZE,
    }
}

/// The largest postcard payload of any message at width `k`.
pub const fn max_payload_any(k: usize) -> usize {
    let mut m = 0;
    let mut i = 0;
    while i < Kind::ALL.len() {
        let p = max_payload(Kind::ALL[i], k);
        if p > m {
            m = p;
        }
        i += 1;
    }
    m
}

/// Bytes of a frame buffer that can hold any frame of the protocol at width `k` (for
/// [`super::FrameAccumulator`] and the encoders).
pub const fn max_frame_buf_len(k: usize) -> usize {
    frame_buf_len(max_payload_any(k))
}

impl<'a> Message<'a> {
    /// The frame kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::RoundStart(_) => Kind::RoundStart,
            Message::ItemRows(_) => Kind::ItemRows,
            Message::Ratings(_) => Kind::Ratings,
            Message::UpdateBegin(_) => Kind::UpdateBegin,
            Message::UpdateRows(_) => Kind::UpdateRows,
            Message::EvalReport(_) => Kind::EvalReport,
            Message::TopKRequest(_) => Kind::TopKRequest,
            Message::TopKAnswer(_) => Kind::TopKAnswer,
            Message::Error(_) => Kind::Error,
            Message::UpdateShape(_) => Kind::UpdateShape,
            Message::StoredData(_) => Kind::StoredData,
            Message::StoreRatings(_) => Kind::StoreRatings,
        }
    }

    /// Layer two: the typed message of a checked frame, for a receiver of width `K`. The
    /// payload is refused as [`WireError::TooLarge`] before it is read if it exceeds its
    /// kind's maximum; row chunks are checked for width, count and data length (their values
    /// are checked when unpacked); a [`RoundStart`] must carry a valid configuration.
    pub fn decode<const K: usize>(frame: &Frame<'a>) -> Result<Self, WireError> {
        let max = max_payload(frame.kind, K);
        Ok(match frame.kind {
            Kind::Hello => Message::Hello(frame.parse(max)?),
            Kind::RoundStart => {
                let r: RoundStart = frame.parse(max)?;
                r.config.validate().map_err(|_| WireError::InvalidValue {
                    what: "round configuration is invalid",
                })?;
                Message::RoundStart(r)
            }
            Kind::ItemRows | Kind::UpdateRows => {
                let c: RowChunk<'a> = frame.parse(max)?;
                c.validate::<K>()?;
                if frame.kind == Kind::ItemRows {
                    Message::ItemRows(c)
                } else {
                    Message::UpdateRows(c)
                }
            }
            Kind::Ratings => {
                let c: RatingsChunk = frame.parse(max)?;
                if c.ratings.iter().any(|r| !r.rating.is_finite()) {
                    return Err(WireError::InvalidValue {
                        what: "non-finite rating",
                    });
                }
                Message::Ratings(c)
            }
            Kind::UpdateBegin => Message::UpdateBegin(frame.parse(max)?),
            Kind::EvalReport => Message::EvalReport(frame.parse(max)?),
            Kind::TopKRequest => {
                let r: TopKRequest = frame.parse(max)?;
                if r.k == 0 || usize::from(r.k) > TOP_K_MAX {
                    return Err(WireError::InvalidValue {
                        what: "top-k request k must be 1..=TOP_K_MAX",
                    });
                }
                Message::TopKRequest(r)
            }
            Kind::TopKAnswer => Message::TopKAnswer(frame.parse(max)?),
            Kind::Error => Message::Error(frame.parse(max)?),
            Kind::UpdateShape => Message::UpdateShape(frame.parse(max)?),
            Kind::StoredData => Message::StoredData(frame.parse(max)?),
            Kind::StoreRatings => Message::StoreRatings(frame.parse(max)?),
        })
    }

    /// Encodes this message as one frame into `buf` (at least
    /// [`frame_buf_len`]`(max_payload(kind, K))` bytes); returns the frame's length,
    /// delimiter included.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.encode_with(&mut Framing::Stream, buf)
    }

    /// [`Self::encode`] through any [`FrameWriter`] (a sealing session: WIRE.md 7).
    pub fn encode_with(
        &self,
        w: &mut impl FrameWriter,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        let kind = self.kind();
        w.write_frame(kind, buf, &mut |out| match self {
            Message::Hello(m) => postcard_payload(m, out),
            Message::RoundStart(m) => postcard_payload(m, out),
            Message::ItemRows(m) | Message::UpdateRows(m) => postcard_payload(m, out),
            Message::Ratings(m) => postcard_payload(m, out),
            Message::UpdateBegin(m) => postcard_payload(m, out),
            Message::EvalReport(m) => postcard_payload(m, out),
            Message::TopKRequest(m) => postcard_payload(m, out),
            Message::TopKAnswer(m) => postcard_payload(m, out),
            Message::Error(m) => postcard_payload(m, out),
            Message::UpdateShape(m) => postcard_payload(m, out),
            Message::StoredData(m) => postcard_payload(m, out),
            Message::StoreRatings(m) => postcard_payload(m, out),
        })
    }
}

/// Sends a client's ratings as [`RatingsChunk`] frames numbered 0, 1, 2, ... (one empty chunk
/// for an empty upload). `buf`: at least [`max_frame_buf_len`]`(1)` bytes. Returns the bytes
/// written.
pub fn encode_ratings<E>(
    items: &[u32],
    ratings: &[f32],
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    if items.len() != ratings.len() || u32::try_from(items.len()).is_err() {
        return Err(WireError::InvalidValue {
            what: "items and ratings differ in length",
        }
        .into());
    }
    let total = items.len() as u32;
    let mut written = 0;
    let mut seq = 0u32;
    let mut start = 0;
    loop {
        let end = core::cmp::min(items.len(), start + RATINGS_PER_CHUNK);
        let mut chunk = RatingsChunk {
            seq,
            total,
            ratings: heapless::Vec::new(),
        };
        for (&item, &rating) in items[start..end].iter().zip(&ratings[start..end]) {
            // At most RATINGS_PER_CHUNK by construction.
            let _ = chunk.ratings.push(Rating { item, rating });
        }
        let len = encode_frame(Kind::Ratings, &chunk, buf)?;
        sink(&buf[..len]).map_err(EncodeError::Sink)?;
        written += len;
        seq += 1;
        start = end;
        if start >= items.len() {
            return Ok(written);
        }
    }
}

/// Checks a ratings upload chunk by chunk: sequence numbers, a constant total, full chunks
/// except the last, no more ratings than announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RatingsStream {
    next_seq: u32,
    total: u32,
    received: u32,
}

impl RatingsStream {
    /// Waiting for chunk 0.
    pub const fn new() -> Self {
        Self {
            next_seq: 0,
            total: 0,
            received: 0,
        }
    }

    /// Accepts one chunk; returns `true` when the upload is complete. On error the caller
    /// discards the ratings received so far.
    pub fn accept(&mut self, chunk: &RatingsChunk) -> Result<bool, WireError> {
        if chunk.seq != self.next_seq {
            return Err(WireError::BadChunkSequence {
                expected: self.next_seq,
                got: chunk.seq,
            });
        }
        if chunk.seq == 0 {
            self.total = chunk.total;
        } else if chunk.total != self.total {
            return Err(WireError::InvalidValue {
                what: "ratings total changed within an upload",
            });
        }
        let n = chunk.ratings.len() as u32;
        let expect = core::cmp::min(RATINGS_PER_CHUNK as u32, self.total - self.received);
        if n != expect {
            return Err(WireError::InvalidValue {
                what: "ratings chunk count differs from the total announced",
            });
        }
        self.received += n;
        self.next_seq += 1;
        Ok(self.received == self.total)
    }
}
