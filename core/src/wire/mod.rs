//! The wire protocol between a server (or the simulator) and a device: postcard messages in
//! COBS frames with a CRC-32, versioned, every buffer sized at compile time. The full
//! byte-level specification is `core/WIRE.md`.
//!
//! A frame is `COBS(header ++ payload ++ crc32_le(header ++ payload)) ++ 0x00`, with
//! `header = [major, minor, kind]` and `payload` the postcard encoding of the kind's message.
//! Decoding untrusted bytes is two layers: [`next_frame`] / [`Frame::check`] (length, COBS,
//! CRC, version, kind) then [`Frame::parse`] (the typed message, size-checked first).
//!
//! Messages (one per [`Kind`]): [`Hello`], [`RoundStart`] (embeds [`RoundConfig`](crate::RoundConfig)),
//! item rows and update rows as [`RowChunk`]s of at most [`ROWS_PER_CHUNK`] rows in a
//! [`RowEncoding`] (f32, or i16 / i8 with a per-row scale), [`RatingsChunk`], [`UpdateBegin`],
//! [`EvalReport`], [`TopKRequest`], [`TopKAnswer`], [`ErrorMsg`]; [`Message`] decodes any of
//! them. Every kind has a compile-time maximum payload ([`max_payload`]), so a device sizes its
//! one frame buffer as [`max_frame_buf_len`]`(K)` and refuses longer frames unread. Streams of
//! chunks carry sequence numbers ([`RowStream`], [`RatingsStream`]) so a lost, duplicated or
//! reordered chunk is an error. Every decoder returns a [`WireError`] for bad input and never
//! panics; `examples/fuzz_frames.rs` fuzzes them (run it with `--seconds 15` in CI).
//!
//! # The update path
//!
//! [`encode_update`] streams a device's [`Update`](crate::Update) as frames into a sink;
//! [`decode_update`] validates the concatenated frames and hands each row to a visitor.
//!
//! ```
//! use fedrecon_core::wire::{decode_update, encode_update, update_buf_len, RowEncoding, UpdateInfo};
//! use fedrecon_core::{Metrics, Update};
//!
//! const K: usize = 4;
//! let items = [3u32, 7];
//! let deltas = [[0.5f32, -0.25, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4]];
//! let update = Update::<f32, K> {
//!     items: &items,
//!     deltas: &deltas,
//!     bias_deltas: None,
//!     weight: 10,
//!     metrics: Metrics::default(),
//! };
//! let mut buf = [0u8; update_buf_len(K)];
//! let mut wire = [0u8; 512];
//! let mut n = 0;
//! let info = UpdateInfo { round: 1, client: 42 };
//! encode_update(info, &update, RowEncoding::F32, &mut buf, |frame: &[u8]| {
//!     wire[n..n + frame.len()].copy_from_slice(frame);
//!     n += frame.len();
//!     Ok::<(), ()>(())
//! })
//! .unwrap();
//!
//! // Receiver: accumulate into a per-client scratch, commit only if decoding returns Ok.
//! let mut scratch = [[0.0f32; K]; 8];
//! let summary = decode_update::<K>(&wire[..n], &mut buf, |item, delta, _bias| {
//!     scratch[item as usize] = *delta;
//! })
//! .unwrap();
//! assert_eq!((summary.round, summary.client, summary.weight, summary.rows), (1, 42, 10, 2));
//! assert_eq!(scratch[7], deltas[1]);
//! ```

mod accum;
pub mod auth;
mod cobs;
pub mod crc;
mod error;
mod frame;
mod framing;
mod msg;
mod owned;
mod rows;
mod shape;
mod update;

pub use accum::{Feed, FeedRaw, FrameAccumulator};
pub use cobs::max_encoded_len as cobs_max_encoded_len;
pub use error::{EncodeError, WireError};
pub use frame::{
    CRC_LEN, DELIMITER, Frame, HEADER_LEN, Kind, PROTOCOL_MAJOR, PROTOCOL_MINOR, encode_frame,
    encode_frame_in, encode_frame_raw, encode_frame_with, encode_frame_with_in, frame_buf_len,
    max_frame_len, next_frame, next_raw_frame,
};
pub use framing::{FrameWriter, Framing, PACKET_LEN_BYTES, next_packet};
pub use msg::{
    ErrorCode, ErrorMsg, EvalReport, FirmwareVersion, Hello, Message, RATINGS_PER_CHUNK, Rating,
    RatingsChunk, RatingsStream, RoundMode, RoundStart, Scored, TOP_K_MAX, TopKAnswer, TopKRequest,
    Version, encode_ratings, encoding_bit, max_frame_buf_len, max_payload, max_payload_any,
};
pub use owned::{RatingsDigest, StoreRatings, StoredData};
pub use rows::{
    Bytes, ROWS_PER_CHUNK, RowChunk, RowEncoding, pack_row, row_chunk_max_payload, unpack_row,
    varint_len,
};
pub use shape::{
    UpdateShape, UplinkRows, encode_shaped_update, encode_shaped_update_with, qmax,
    stochastic_round,
};
pub use update::{
    RowStream, UpdateBegin, UpdateInfo, UpdateReceiver, UpdateSummary, decode_update,
    decode_update_in, encode_item_rows, encode_item_rows_in, encode_item_rows_with, encode_update,
    encode_update_in, encode_update_with, update_buf_len,
};
