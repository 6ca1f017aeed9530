//! How a device shapes its update for the uplink (kind 11, [`UpdateShape`]): the touched rows
//! only, every row of the catalogue, or the touched rows padded with seeded zero-row decoys,
//! optionally stochastically rounded onto the quantization grid. The server sends the shape
//! before a `Train` round's `RoundStart`; without one a device sends the touched rows.
//!
//! The host simulator shapes its virtual devices' updates with the same draws
//! (`host-sim/src/comm`), so a board's shaped update has the simulator's bytes.

use super::frame::Kind;
use super::rows::RowEncoding;
use super::update::{check_update_args, encode_row_chunks, send_begin};
use super::{EncodeError, FrameWriter, Framing, UpdateInfo, WireError};
use crate::device::Update;
use crate::rng::DeviceRng;
use crate::scalar::Scalar;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Which rows an update carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, MaxSize)]
pub enum UplinkRows {
    /// The touched rows only.
    #[default]
    Sparse,
    /// Every row of the catalogue, zero deltas included.
    Dense,
    /// The touched rows plus zero-delta decoys up to `pad_rows` rows.
    Padded,
}

/// The shape of the update of the next `Train` round (kind 11, server → device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, MaxSize)]
pub struct UpdateShape {
    /// Which rows to send.
    pub rows: UplinkRows,
    /// Rows of a padded update (ignored otherwise).
    pub pad_rows: u32,
    /// Seed of the decoy draws and of stochastic rounding.
    pub seed: u64,
    /// Round quantized values up or down at random, unbiasedly (needs an i16 / i8 uplink).
    pub stochastic_rounding: bool,
}

impl UpdateShape {
    /// Whether this shape sends exactly what [`super::encode_update`] sends.
    pub fn is_plain(&self) -> bool {
        self.rows == UplinkRows::Sparse && !self.stochastic_rounding
    }
}

/// The largest code of a row encoding (0 for f32, which is never rounded).
pub fn qmax(enc: RowEncoding) -> f32 {
    match enc {
        RowEncoding::F32 => 0.0,
        RowEncoding::I16 => 32767.0,
        RowEncoding::I8 => 127.0,
    }
}

/// Moves every value of `row` onto the grid `scale · {−q..q}` of the per-row quantizer
/// (scale `max|x| / q`), rounding `x / scale` down or up with probabilities that make the
/// result unbiased: `E[x'] = x`. The value(s) of largest magnitude are on the grid already and
/// are kept exactly, so the row's scale, and hence the grid, do not move; the deterministic
/// quantizer then reproduces every `x'` exactly. Zero and non-finite rows draw nothing.
pub fn stochastic_round<const K: usize>(row: &mut [f32; K], q: f32, rng: &mut DeviceRng) {
    let m = row.iter().fold(0.0f32, |m, x| m.max(libm::fabsf(*x)));
    if !(m.is_finite() && m > 0.0) {
        return;
    }
    let scale = m / q;
    for x in row.iter_mut() {
        if libm::fabsf(*x) == m {
            continue;
        }
        let t = *x / scale;
        let lo = libm::floorf(t);
        let p = t - lo;
        let u = rng.unit_f32();
        let code = if u < p { lo + 1.0 } else { lo };
        // `q · scale` may round one ulp above `m`: keep the row's maximum (and scale) fixed.
        *x = (code.clamp(-q, q) * scale).clamp(-m, m);
    }
}

/// Encodes `update` shaped by `shape` for a catalogue of `num_items` items, as
/// [`super::encode_update`] does (an `UpdateBegin` then `UpdateRows` chunks), and returns the
/// rows sent. Decoys are drawn uniformly without replacement from the untouched items with
/// `DeviceRng::new(shape.seed)` (at most `P` of them: more is
/// [`WireError::BufferTooSmall`], a `CapacityExceeded` refusal), then every row is
/// stochastically rounded in ascending order with the same generator when asked. Rows are
/// produced one at a time, so a dense update of any catalogue needs no more memory.
pub fn encode_shaped_update<S: Scalar, const K: usize, const P: usize, E>(
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    shape: &UpdateShape,
    num_items: u32,
    buf: &mut [u8],
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u32, EncodeError<E>> {
    encode_shaped_update_with::<S, K, P, E>(
        &mut Framing::Stream,
        info,
        update,
        encoding,
        shape,
        num_items,
        buf,
        sink,
    )
}

/// [`encode_shaped_update`] through any [`FrameWriter`] (a sealing session: WIRE.md 7).
#[allow(clippy::too_many_arguments)]
pub fn encode_shaped_update_with<S: Scalar, const K: usize, const P: usize, E>(
    w: &mut impl FrameWriter,
    info: UpdateInfo,
    update: &Update<'_, S, K>,
    encoding: RowEncoding,
    shape: &UpdateShape,
    num_items: u32,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u32, EncodeError<E>> {
    check_update_args(update, buf)?;
    let touched = update.items.len();
    if shape.stochastic_rounding && encoding == RowEncoding::F32 {
        return Err(WireError::InvalidValue {
            what: "stochastic rounding needs an i16 or i8 uplink",
        }
        .into());
    }
    let mut rng = DeviceRng::new(shape.seed);
    let n = num_items as usize;
    let target = match shape.rows {
        UplinkRows::Sparse => touched,
        UplinkRows::Dense => n,
        UplinkRows::Padded => (shape.pad_rows as usize).min(n),
    };
    let dense = shape.rows != UplinkRows::Sparse && target == n;
    // Decoys, ascending: drawn in the simulator's order (a draw that hits a touched item or
    // an earlier decoy is redrawn), kept sorted for the merge below.
    let mut decoys: heapless::Vec<u32, P> = heapless::Vec::new();
    if !dense && target > touched {
        if target - touched > P {
            return Err(WireError::BufferTooSmall {
                need: target - touched,
                have: P,
            }
            .into());
        }
        while touched + decoys.len() < target {
            let j = rng.below(num_items);
            if update.items.binary_search(&j).is_ok() {
                continue;
            }
            if let Err(at) = decoys.binary_search(&j) {
                // Capacity checked above.
                let _ = decoys.insert(at, j);
            }
        }
    }
    let rows = if dense { n } else { touched + decoys.len() };
    let has_bias = update.bias_deltas.is_some();
    send_begin(w, info, update, encoding, rows, buf, &mut sink)?;
    let q = qmax(encoding);
    // Merge cursors: the next touched row and the next decoy.
    let (mut t, mut d) = (0usize, 0usize);
    encode_row_chunks(
        w,
        Kind::UpdateRows,
        info.round,
        info.client,
        encoding,
        has_bias,
        rows,
        |i, out: &mut [f32; K]| {
            let item = if dense {
                i as u32
            } else {
                match (update.items.get(t), decoys.get(d)) {
                    (Some(&a), Some(&b)) if b < a => b,
                    (Some(&a), _) => a,
                    (None, Some(&b)) => b,
                    // `rows` counts exactly the touched rows and decoys.
                    (None, None) => u32::MAX,
                }
            };
            if update.items.get(t) == Some(&item) {
                for (o, x) in out.iter_mut().zip(&update.deltas[t]) {
                    *o = x.to_f32();
                }
                let bias = update.bias_deltas.map(|b| b[t].to_f32());
                t += 1;
                if shape.stochastic_rounding {
                    stochastic_round(out, q, &mut rng);
                }
                (item, bias)
            } else {
                if !dense {
                    d += 1;
                }
                *out = [0.0; K];
                (item, has_bias.then_some(0.0))
            }
        },
        buf,
        &mut sink,
    )?;
    Ok(rows as u32)
}
