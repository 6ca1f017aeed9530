//! The uplink of one virtual device: its [`Update`] is encoded into wire frames exactly as a
//! board sends it (`fedrecon_core::wire`: postcard messages in COBS frames with CRC-32), and the
//! server decodes those bytes row by row. Every simulated client goes through this path, so the
//! simulator measures (and exercises) the real wire cost.
//!
//! [`encode_update`] and [`decode_update`] are the only two functions that touch the format.

use anyhow::{Result, anyhow, ensure};
use fedrecon_core::wire::{self, RowEncoding, UpdateInfo};
use fedrecon_core::{Metrics, Update};

/// Row encoding of simulated updates: exact `f32`.
pub const ENCODING: RowEncoding = RowEncoding::F32;

/// What the server learns from a decoded update besides its rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateHeader {
    /// Aggregation weight (0 for a non-finite update).
    pub weight: u32,
    /// The client's training metric sums.
    pub metrics: Metrics,
    /// Number of rows that followed.
    pub rows: u32,
}

/// Frame scratch large enough for any frame of the update path at width `K`.
pub fn frame_buffer<const K: usize>() -> Vec<u8> {
    vec![0; wire::update_buf_len(K)]
}

/// Encodes `update` of `client` in `round` into `out` (cleared first) as the frames a device
/// sends. `buf` is frame scratch from [`frame_buffer`].
pub fn encode_update<S: fedrecon_core::Scalar, const K: usize>(
    round: u32,
    client: u32,
    update: &Update<'_, S, K>,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    encode_update_as(round, client, update, ENCODING, buf, out)
}

/// [`encode_update`] with the row encoding `encoding` (the uplink of `--uplink`).
pub fn encode_update_as<S: fedrecon_core::Scalar, const K: usize>(
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
    wire::encode_update(
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

/// Decodes the frames of one update, checking that it is `client`'s for `round`, and calls
/// `visit(item, delta_row, bias_delta)` for every row in order. The rows are valid only if
/// this returns `Ok` (see [`wire::decode_update`]).
pub fn decode_update<const K: usize>(
    bytes: &[u8],
    round: u32,
    client: u32,
    buf: &mut Vec<u8>,
    visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<UpdateHeader> {
    if buf.len() < wire::update_buf_len(K) {
        *buf = frame_buffer::<K>();
    }
    let s = wire::decode_update::<K>(bytes, buf, visit).map_err(|e| anyhow!("{e}"))?;
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
        encode_update(5, 11, &u, &mut buf, &mut out).unwrap();
        let mut seen = Vec::new();
        let h = decode_update::<K>(&out, 5, 11, &mut buf, |i, d, b| seen.push((i, *d, b))).unwrap();
        assert_eq!(h.weight, 7);
        assert_eq!(h.metrics, u.metrics);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2], (9, deltas[2], None));
        assert!(decode_update::<K>(&out, 6, 11, &mut buf, |_, _, _| {}).is_err());
        assert!(downlink_bytes::<K>(3, false) >= out.len() as u64 / 2);
    }
}
