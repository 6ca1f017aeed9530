//! The uplink of one device: its [`Update`] is encoded into the wire messages a board sends
//! (`fedrecon_core::wire`: postcard messages with a version and kind header), delimited as the
//! link needs ([`Framing`]): an in-process virtual device hands over length-prefixed packets
//! ([`VIRTUAL_LINK`]), a board's serial link carries COBS frames with a CRC-32. The server
//! decodes those bytes row by row with full validation either way, so the simulator measures
//! and exercises the real message cost, and reports the framing beside it.
//!
//! [`encode_update`] and [`decode_update`] are the only two functions that touch the format.

use anyhow::{Result, anyhow, ensure};
use fedrecon_core::wire::{self, Framing, RowEncoding, UpdateInfo};
use fedrecon_core::{Metrics, Update};

/// Row encoding of simulated updates: exact `f32`.
pub const ENCODING: RowEncoding = RowEncoding::F32;

/// How in-process devices and the server delimit messages: whole packets handed over in
/// memory need no byte stuffing and no CRC (nothing corrupts them), only their lengths.
pub const VIRTUAL_LINK: Framing = Framing::Packet;

/// What the server learns from a decoded update besides its rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateHeader {
    /// Aggregation weight (0 for a non-finite update).
    pub weight: u32,
    /// The client's training metric sums.
    pub metrics: Metrics,
    /// Number of rows that followed.
    pub rows: u32,
    /// Bytes of the messages (header and payload), the rest of the input being framing.
    pub payload: u64,
}

/// Frame scratch large enough for any frame of the update path at width `K`.
pub fn frame_buffer<const K: usize>() -> Vec<u8> {
    vec![0; wire::update_buf_len(K)]
}

/// Encodes `update` of `client` in `round` into `out` (cleared first) as the messages a device
/// sends, in `framing`. `buf` is frame scratch from [`frame_buffer`].
pub fn encode_update<S: fedrecon_core::Scalar, const K: usize>(
    framing: Framing,
    round: u32,
    client: u32,
    update: &Update<'_, S, K>,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    encode_update_as(framing, round, client, update, ENCODING, buf, out)
}

/// [`encode_update`] with the row encoding `encoding` (the uplink of `--uplink`).
pub fn encode_update_as<S: fedrecon_core::Scalar, const K: usize>(
    framing: Framing,
    round: u32,
    client: u32,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    if buf.len() < wire::update_buf_len(K) {
        *buf = frame_buffer::<K>();
    }
    wire::encode_update_in(
        framing,
        UpdateInfo { round, client },
        update,
        encoding,
        buf,
        |frame: &[u8]| {
            out.extend_from_slice(frame);
            Ok::<(), core::convert::Infallible>(())
        },
    )
    .map_err(|e| anyhow!("encoding the update of client {client}: {e}"))?;
    Ok(())
}

/// Decodes the messages of one update, delimited in `framing`, checking that it is
/// `client`'s for `round`, and calls `visit(item, delta_row, bias_delta)` for every row in
/// order. The rows are valid only if this returns `Ok` (see [`wire::decode_update`]).
pub fn decode_update<const K: usize>(
    framing: Framing,
    bytes: &[u8],
    round: u32,
    client: u32,
    buf: &mut Vec<u8>,
    visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<UpdateHeader> {
    if buf.len() < wire::update_buf_len(K) {
        *buf = frame_buffer::<K>();
    }
    let s = wire::decode_update_in::<K>(framing, bytes, buf, visit).map_err(|e| anyhow!("{e}"))?;
    ensure!(
        s.round == round && s.client == client,
        "update is for round {} client {}, expected round {round} client {client}",
        s.round,
        s.client
    );
    Ok(UpdateHeader {
        weight: s.weight,
        metrics: s.metrics,
        rows: s.rows,
        payload: s.payload as u64,
    })
}

/// Bytes a device downloads to run its round: the `ItemRows` frames of the `rows` distinct
/// items it rated (an upper bound: chunk headers and COBS overhead at their maximum).
pub fn downlink_bytes<const K: usize>(rows: usize, with_bias: bool) -> u64 {
    let stride = ENCODING.row_stride(K, with_bias);
    let mut total = 0;
    let mut left = rows;
    while left > 0 {
        let m = left.min(wire::ROWS_PER_CHUNK);
        let data = m * stride;
        // RowChunkHead: five varint u32 (<= 5 bytes each), two one-byte fields, a u16 varint.
        let payload = 5 * 5 + 2 + 3 + wire::varint_len(data) + data;
        total += wire::max_frame_len(payload);
        left -= m;
    }
    total as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        const K: usize = 3;
        let items = [1u32, 4, 9];
        let deltas = [[0.5f32, -1.0, 2.0], [0.0, 0.25, -0.125], [1e-3, 7.0, -8.5]];
        let u = Update::<f32, K> {
            items: &items,
            deltas: &deltas,
            bias_deltas: None,
            weight: 7,
            metrics: Metrics {
                loss_sum: 1.5,
                abs_err_sum: 2.0,
                correct: 3,
                count: 7,
            },
        };
        let (mut buf, mut out) = (frame_buffer::<K>(), Vec::new());
        let mut payloads = Vec::new();
        for framing in [Framing::Stream, Framing::Packet] {
            encode_update(framing, 5, 11, &u, &mut buf, &mut out).unwrap();
            let mut seen = Vec::new();
            let h = decode_update::<K>(framing, &out, 5, 11, &mut buf, |i, d, b| {
                seen.push((i, *d, b))
            })
            .unwrap();
            assert_eq!(h.weight, 7);
            assert_eq!(h.metrics, u.metrics);
            assert_eq!(seen.len(), 3);
            assert_eq!(seen[2], (9, deltas[2], None));
            assert!(decode_update::<K>(framing, &out, 6, 11, &mut buf, |_, _, _| {}).is_err());
            assert!(h.payload < out.len() as u64);
            payloads.push(h.payload);
        }
        // Two messages (begin, one chunk): the packets add their length prefixes only.
        assert_eq!(payloads[0], payloads[1]);
        assert_eq!(
            out.len() as u64 - payloads[1],
            2 * wire::PACKET_LEN_BYTES as u64
        );
        assert!(downlink_bytes::<K>(3, false) >= out.len() as u64 / 2);
    }
}
