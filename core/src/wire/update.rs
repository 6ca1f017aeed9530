//! The update path: a client's sparse update streamed as frames, and its validating decoder.

use super::frame::{Frame, HEADER_LEN, Kind, frame_buf_len, next_frame, postcard_payload};
use super::framing::{FrameWriter, Framing, next_packet};
use super::rows::{
    ROWS_PER_CHUNK, RowChunk, RowChunkHead, RowEncoding, pack_row, row_chunk_max_payload,
    unpack_row, varint_len,
};
use super::{EncodeError, WireError};
use crate::device::Update;
use crate::model::Metrics;
use crate::scalar::Scalar;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Who sent an update and for which round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, MaxSize)]
pub struct UpdateInfo {
    /// The round number (from `RoundStart`).
    pub round: u32,
    /// The client (or board) id; also the stream id of the update's row chunks.
    pub client: u32,
}

/// First frame of an update stream (sequence number 0): everything but the rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct UpdateBegin {
    /// The round number.
    pub round: u32,
    /// The client id (the stream id of the row chunks that follow).
    pub client: u32,
    /// Embedding width `K`.
    pub k: u32,
    /// Encoding of the row deltas.
    pub encoding: RowEncoding,
    /// Whether each row carries an item-bias delta.
    pub has_bias: bool,
    /// Rows that follow, in `ceil(rows / ROWS_PER_CHUNK)` chunks numbered 1, 2, ...
    pub rows: u32,
    /// Aggregation weight.
    pub weight: u32,
    /// Training metric sums.
    pub metrics: Metrics,
}

/// What [`decode_update`] learned besides the rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateSummary {
    /// The round number.
    pub round: u32,
    /// The client id.
    pub client: u32,
    /// Aggregation weight.
    pub weight: u32,
    /// Training metric sums.
    pub metrics: Metrics,
    /// Rows delivered to the visitor.
    pub rows: u32,
    /// Encoding of the row deltas.
    pub encoding: RowEncoding,
    /// Whether rows carried bias deltas.
    pub has_bias: bool,
    /// Frames read (begin frame plus chunks).
    pub frames: u32,
    /// Bytes of input consumed.
    pub bytes: usize,
    /// Bytes of the messages themselves (header and payload of every frame): `bytes` less
    /// what the link's [`Framing`] added.
    pub payload: usize,
}

/// Bytes of the frame buffer [`encode_update`] and [`decode_update`] need at width `k`
/// (enough for any frame of the update path: 1,706 at `K = 50`, 2,156 at `K = 64`).
pub const fn update_buf_len(k: usize) -> usize {
    let rows = row_chunk_max_payload(k);
    let begin = UpdateBegin::POSTCARD_MAX_SIZE;
    frame_buf_len(if rows > begin { rows } else { begin })
}

fn chunk_count(rows: usize) -> usize {
    rows.div_ceil(ROWS_PER_CHUNK)
}

/// Streams rows as `RowChunk` frames of `kind` with sequence numbers starting at 1.
/// `row(i, out)` writes row `i` of `n` (called once per row, in order) into `out` and returns
/// its item and bias: rows may be computed on the fly (zero decoys, stochastically rounded
/// deltas, see `super::shape`). Returns bytes written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_row_chunks<S: Scalar, const K: usize, E>(
    w: &mut impl FrameWriter,
    kind: Kind,
    round: u32,
    stream: u32,
    encoding: RowEncoding,
    has_bias: bool,
    n: usize,
    mut row: impl FnMut(usize, &mut [S; K]) -> (u32, Option<S>),
    buf: &mut [u8],
    sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let stride = encoding.row_stride(K, has_bias);
    let mut scratch = [S::ZERO; K];
    let mut written = 0;
    for c in 0..chunk_count(n) {
        let lo = c * ROWS_PER_CHUNK;
        let hi = core::cmp::min(n, lo + ROWS_PER_CHUNK);
        let head = RowChunkHead {
            round,
            stream,
            seq: (c + 1) as u32,
            k: K as u32,
            encoding,
            has_bias,
            count: (hi - lo) as u16,
        };
        let data_len = (hi - lo) * stride;
        let len = w.write_frame(kind, buf, &mut |out| {
            let have = out.len();
            let too_small = WireError::BufferTooSmall {
                need: row_chunk_max_payload(K),
                have,
            };
            let h = postcard::to_slice(&head, out).map_err(|_| too_small)?.len();
            let v = varint_len(data_len);
            if h + v + data_len > have {
                return Err(too_small);
            }
            // postcard's varint for the byte-string length.
            let mut x = data_len;
            for b in out[h..h + v].iter_mut() {
                *b = (x as u8 & 0x7F) | if x >= 0x80 { 0x80 } else { 0 };
                x >>= 7;
            }
            let data = &mut out[h + v..h + v + data_len];
            for (i, dst) in (lo..hi).zip(data.chunks_exact_mut(stride)) {
                let (item, bias) = row(i, &mut scratch);
                pack_row(encoding, item, &scratch, bias, dst)?;
            }
            Ok(h + v + data_len)
        })?;
        sink(&buf[..len]).map_err(EncodeError::Sink)?;
        written += len;
    }
    Ok(written)
}

/// Sends `n` item rows (server to device) as [`Kind::ItemRows`] chunks numbered 1, 2, ...
/// after a `RoundStart` announcing `n` rows: `row(i)` yields `(item, row, bias)` of row `i`,
/// in strictly ascending item order. `has_bias` must match the round's
/// `config.model.item_bias`; `buf` is at least [`update_buf_len`]`(K)` bytes. The device
/// checks the stream with `RowStream::new(round, 0, down, item_bias, rows)`.
#[allow(clippy::too_many_arguments)]
pub fn encode_item_rows<'r, S: Scalar, const K: usize, E>(
    round: u32,
    encoding: RowEncoding,
    has_bias: bool,
    n: usize,
    row: impl FnMut(usize) -> (u32, &'r [S; K], Option<S>),
    buf: &mut [u8],
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    encode_item_rows_in(
        Framing::Stream,
        round,
        encoding,
        has_bias,
        n,
        row,
        buf,
        sink,
    )
}

/// [`encode_item_rows`] in any [`Framing`].
#[allow(clippy::too_many_arguments)]
pub fn encode_item_rows_in<'r, S: Scalar, const K: usize, E>(
    framing: Framing,
    round: u32,
    encoding: RowEncoding,
    has_bias: bool,
    n: usize,
    row: impl FnMut(usize) -> (u32, &'r [S; K], Option<S>),
    buf: &mut [u8],
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let mut framing = framing;
    encode_item_rows_with(&mut framing, round, encoding, has_bias, n, row, buf, sink)
}

/// [`encode_item_rows`] through any [`FrameWriter`] (a sealing session: WIRE.md 7).
#[allow(clippy::too_many_arguments)]
pub fn encode_item_rows_with<'r, S: Scalar, const K: usize, E>(
    w: &mut impl FrameWriter,
    round: u32,
    encoding: RowEncoding,
    has_bias: bool,
    n: usize,
    row: impl FnMut(usize) -> (u32, &'r [S; K], Option<S>),
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    if buf.len() < update_buf_len(K) {
        return Err(WireError::BufferTooSmall {
            need: update_buf_len(K),
            have: buf.len(),
        }
        .into());
    }
    let mut row = row;
    encode_row_chunks(
        w,
        Kind::ItemRows,
        round,
        0,
        encoding,
        has_bias,
        n,
        |i, out: &mut [S; K]| {
            let (item, r, bias) = row(i);
            *out = *r;
            (item, bias)
        },
        buf,
        &mut sink,
    )
}

/// Encodes `update` as a stream of frames passed one by one to `sink`: an
/// [`Kind::UpdateBegin`] frame (sequence 0), then `ceil(rows / ROWS_PER_CHUNK)`
/// [`Kind::UpdateRows`] chunks with sequence numbers 1, 2, .... `buf` is the frame scratch,
/// at least [`update_buf_len`]`(K)` bytes; nothing is allocated. Returns the bytes written.
///
/// Fails with [`WireError::InvalidValue`] on a non-finite delta or bias, or when the
/// update's slices have different lengths; with [`EncodeError::Sink`] when `sink` fails
/// (the receiver then sees a truncated stream, which it rejects).
pub fn encode_update<S: Scalar, const K: usize, E>(
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    buf: &mut [u8],
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    encode_update_in(Framing::Stream, info, update, encoding, buf, sink)
}

/// [`encode_update`] in any [`Framing`]: the same messages, delimited as the link needs.
pub fn encode_update_in<S: Scalar, const K: usize, E>(
    framing: Framing,
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    buf: &mut [u8],
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let mut framing = framing;
    encode_update_with(&mut framing, info, update, encoding, buf, sink)
}

/// [`encode_update`] through any [`FrameWriter`]: a sealing session (WIRE.md 7) sends the
/// same messages, each sealed.
pub fn encode_update_with<S: Scalar, const K: usize, E>(
    w: &mut impl FrameWriter,
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    check_update_args(update, buf)?;
    let n = update.items.len();
    let has_bias = update.bias_deltas.is_some();
    let len = send_begin(w, info, update, encoding, n, buf, &mut sink)?;
    let rows = encode_row_chunks(
        w,
        Kind::UpdateRows,
        info.round,
        info.client,
        encoding,
        has_bias,
        n,
        |i, out: &mut [S; K]| {
            *out = update.deltas[i];
            (update.items[i], update.bias_deltas.map(|b| b[i]))
        },
        buf,
        &mut sink,
    )?;
    Ok(len + rows)
}

/// The checks every update encoder makes before it writes anything: items, deltas and bias
/// deltas of one length, and a frame buffer of at least [`update_buf_len`]`(K)` bytes.
pub(crate) fn check_update_args<S: Scalar, const K: usize>(
    update: &Update<'_, S, K>,
    buf: &[u8],
) -> Result<(), WireError> {
    let n = update.items.len();
    if update.deltas.len() != n || update.bias_deltas.is_some_and(|b| b.len() != n) {
        return Err(WireError::InvalidValue {
            what: "update items, deltas and bias deltas differ in length",
        });
    }
    if buf.len() < update_buf_len(K) {
        return Err(WireError::BufferTooSmall {
            need: update_buf_len(K),
            have: buf.len(),
        });
    }
    Ok(())
}

/// Encodes and sends the [`UpdateBegin`] of `update` announcing `rows` rows in `encoding`
/// (sequence 0 of its stream); returns the bytes written.
pub(crate) fn send_begin<S: Scalar, const K: usize, E>(
    w: &mut impl FrameWriter,
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    rows: usize,
    buf: &mut [u8],
    sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let begin = UpdateBegin {
        round: info.round,
        client: info.client,
        k: K as u32,
        encoding,
        has_bias: update.bias_deltas.is_some(),
        rows: rows as u32,
        weight: update.weight,
        metrics: canonical_nans(update.metrics),
    };
    let len = w.write_frame(Kind::UpdateBegin, buf, &mut |out| {
        postcard_payload(&begin, out)
    })?;
    sink(&buf[..len]).map_err(EncodeError::Sink)?;
    Ok(len)
}

/// `m` with any NaN sum replaced by the canonical quiet NaN (`0x7FC0_0000`). A diverged
/// client's sums are NaN, and NaN payloads differ by target (x86 SSE makes `0xFFC0_0000`, a
/// Cortex-M4F FPU `0x7FC0_0000`): on the wire every NaN is the same, so a board's update is
/// byte-identical to the simulator's.
pub(crate) fn canonical_nans(mut m: Metrics) -> Metrics {
    for x in [&mut m.loss_sum, &mut m.abs_err_sum] {
        if x.is_nan() {
            *x = f32::NAN;
        }
    }
    m
}

/// Validates a stream of [`RowChunk`]s against its begin message, in this order: width
/// (`DimensionMismatch`), count and data length, sequence number (`BadChunkSequence`), round
/// and stream, encoding and bias flag, rows remaining, then each row's values and strictly
/// ascending item ids (all `InvalidValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowStream {
    round: u32,
    stream: u32,
    encoding: RowEncoding,
    has_bias: bool,
    total: u32,
    received: u32,
    next_seq: u32,
    last_item: Option<u32>,
}

impl RowStream {
    /// A stream of `total` rows announced by a begin message (sequence 0).
    pub fn new(round: u32, stream: u32, encoding: RowEncoding, has_bias: bool, total: u32) -> Self {
        Self {
            round,
            stream,
            encoding,
            has_bias,
            total,
            received: 0,
            next_seq: 1,
            last_item: None,
        }
    }

    /// All announced rows arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.total
    }

    /// Rows received so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Checks one chunk and hands its rows to `visit`. On error the stream is poisoned only
    /// in the sense that the caller must discard it; rows already visited are invalid.
    pub fn accept<const K: usize>(
        &mut self,
        chunk: &RowChunk<'_>,
        mut visit: impl FnMut(u32, &[f32; K], Option<f32>),
    ) -> Result<(), WireError> {
        // Width, count and length first, as `Message::decode` checks them, so a receiver
        // reports the same error whichever of the two it decodes a chunk with (WIRE.md 2).
        let stride = chunk.validate::<K>()?;
        if chunk.seq != self.next_seq {
            return Err(WireError::BadChunkSequence {
                expected: self.next_seq,
                got: chunk.seq,
            });
        }
        if chunk.round != self.round || chunk.stream != self.stream {
            return Err(WireError::InvalidValue {
                what: "row chunk belongs to another round or stream",
            });
        }
        if chunk.encoding != self.encoding || chunk.has_bias != self.has_bias {
            return Err(WireError::InvalidValue {
                what: "row chunk encoding differs from its stream's",
            });
        }
        let count = u32::from(chunk.count);
        let expect = core::cmp::min(ROWS_PER_CHUNK as u32, self.total - self.received);
        if count != expect {
            return Err(WireError::InvalidValue {
                what: "row chunk count differs from the rows announced",
            });
        }
        let mut out = [0.0f32; K];
        for b in chunk.data.0.chunks_exact(stride) {
            let (item, bias) = unpack_row(self.encoding, self.has_bias, b, &mut out)?;
            if self.last_item.is_some_and(|l| item <= l) {
                return Err(WireError::InvalidValue {
                    what: "item ids must be strictly ascending",
                });
            }
            self.last_item = Some(item);
            visit(item, &out, bias);
        }
        self.received += count;
        self.next_seq += 1;
        Ok(())
    }
}

/// Receives one update frame by frame (for byte streams read incrementally, e.g. a serial
/// link with a `FrameAccumulator`). [`decode_update`] is this over a slice.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UpdateReceiver<const K: usize> {
    /// The begin message, its row stream, frames and message bytes received.
    state: Option<(UpdateBegin, RowStream, u32, usize)>,
}

impl<const K: usize> UpdateReceiver<K> {
    /// Waiting for an [`UpdateBegin`].
    pub const fn new() -> Self {
        Self { state: None }
    }

    /// Feeds one checked frame. Returns `Some(summary)` when the update is complete. Any
    /// error means the update must be discarded; call [`Self::reset`] before the next one.
    pub fn frame(
        &mut self,
        frame: &Frame<'_>,
        visit: impl FnMut(u32, &[f32; K], Option<f32>),
    ) -> Result<Option<UpdateSummary>, WireError> {
        match &mut self.state {
            None => {
                frame.expect(Kind::UpdateBegin)?;
                let begin: UpdateBegin = frame.parse(UpdateBegin::POSTCARD_MAX_SIZE)?;
                if begin.k as usize != K {
                    return Err(WireError::DimensionMismatch {
                        got: begin.k,
                        expected: K as u32,
                    });
                }
                let stream = RowStream::new(
                    begin.round,
                    begin.client,
                    begin.encoding,
                    begin.has_bias,
                    begin.rows,
                );
                self.state = Some((begin, stream, 1, HEADER_LEN + frame.payload.len()));
            }
            Some((_, stream, frames, payload)) => {
                if frame.kind == Kind::UpdateRows {
                    let chunk: RowChunk<'_> = frame.parse(row_chunk_max_payload(K))?;
                    stream.accept::<K>(&chunk, visit)?;
                    *frames += 1;
                    *payload += HEADER_LEN + frame.payload.len();
                } else {
                    return Err(WireError::UnexpectedKind {
                        got: frame.kind as u8,
                        expected: Kind::UpdateRows as u8,
                    });
                }
            }
        }
        Ok(self.summary())
    }

    fn summary(&self) -> Option<UpdateSummary> {
        let (b, stream, frames, payload) = self.state.as_ref()?;
        stream.is_complete().then_some(UpdateSummary {
            round: b.round,
            client: b.client,
            weight: b.weight,
            metrics: b.metrics,
            rows: b.rows,
            encoding: b.encoding,
            has_bias: b.has_bias,
            frames: *frames,
            bytes: 0,
            payload: *payload,
        })
    }

    /// Forgets any partial update.
    pub fn reset(&mut self) {
        self.state = None;
    }
}

/// Decodes exactly one update from `input` (the concatenated frames [`encode_update`]
/// wrote), validating every frame (COBS, CRC, version, kind, sizes, sequence numbers, row
/// count, width, finite values, ascending ids) and calling `visit(item, delta, bias_delta)`
/// once per row, in order. `buf` is the frame scratch, at least [`update_buf_len`]`(K)`
/// bytes.
///
/// **The visitor's output is valid only if this returns `Ok`**: on error some rows may
/// already have been visited, so accumulate into a per-client scratch and commit it only on
/// `Ok`. Bytes after the last chunk (other than `0x00` delimiters) are
/// [`WireError::TrailingData`]; an input that ends early is [`WireError::Truncated`].
pub fn decode_update<const K: usize>(
    input: &[u8],
    buf: &mut [u8],
    visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<UpdateSummary, WireError> {
    decode_update_in(Framing::Stream, input, buf, visit)
}

/// [`decode_update`] of messages in any [`Framing`]. Packets are checked in place (no copy
/// into `buf`, whose length still bounds each message); after the last chunk the input must
/// end.
pub fn decode_update_in<const K: usize>(
    framing: Framing,
    input: &[u8],
    buf: &mut [u8],
    mut visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<UpdateSummary, WireError> {
    if framing == Framing::Packet {
        return decode_packets(input, buf.len(), visit);
    }
    let mut rx = UpdateReceiver::<K>::new();
    let mut pos = 0;
    // Each iteration consumes at least one byte (a frame ends with its delimiter), so the
    // loop runs at most input.len() times.
    while pos < input.len() {
        let (used, res) = next_frame(&input[pos..], buf);
        pos += used;
        let Some(frame) = res? else { break };
        if let Some(mut s) = rx.frame(&frame, &mut visit)? {
            if input[pos..].iter().any(|&b| b != 0) {
                return Err(WireError::TrailingData);
            }
            s.bytes = input.len();
            return Ok(s);
        }
    }
    Err(WireError::Truncated)
}

fn decode_packets<const K: usize>(
    input: &[u8],
    max: usize,
    mut visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<UpdateSummary, WireError> {
    let mut rx = UpdateReceiver::<K>::new();
    let mut pos = 0;
    // Each packet consumes at least its length prefix, so this runs at most input.len() times.
    while pos < input.len() {
        let (used, frame) = next_packet(&input[pos..], max);
        pos += used;
        if let Some(mut s) = rx.frame(&frame?, &mut visit)? {
            if pos != input.len() {
                return Err(WireError::TrailingData);
            }
            s.bytes = input.len();
            return Ok(s);
        }
    }
    Err(WireError::Truncated)
}
