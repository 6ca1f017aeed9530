//! The normal equations of exact reconstruction, summed over the reconstruction half before
//! the regulariser is added ([`crate::ridge`] has the system). [`rounded_sums`] sums in the
//! ridge type one rounded operation at a time (`f32`, Q3.12); [`exact_sums_q16`] sums Q16.16's
//! integers exactly and rounds each entry once.

use super::{R22, RidgeNum};
use crate::error::{Error, Result};
use crate::fixed::Q16;
use crate::scalar::Scalar;

/// One example as the sums read it: the item row and the parts of its target
/// `rating - item_bias - mu` (zero for a part the model does not have).
#[derive(Debug, Clone, Copy)]
pub struct Example<'a, S, const K: usize> {
    /// The item's row.
    pub row: &'a [S; K],
    /// The rating.
    pub rating: S,
    /// The item's bias (zero without item biases).
    pub item_bias: S,
    /// The global mean (zero without it).
    pub mu: S,
}

/// The system before the regulariser, over `n` examples: the lower triangle of `a` (`C`, or
/// `G` uncentred; the upper triangle is scratch), `b` (`c` or `g`), and the means the data
/// were centred on (zero when uncentred).
#[derive(Debug, Clone)]
pub struct Normal<R, const K: usize> {
    /// `mean((v - m)(v - m)^T)`, lower triangle.
    pub a: [[R; K]; K],
    /// `mean((v - m)(r - mean(r)))`.
    pub b: [R; K],
    /// `m = mean(v)` (zero when uncentred).
    pub mean: [R; K],
    /// `mean(r)` (zero when uncentred).
    pub r_mean: R,
    /// Number of examples.
    pub n: u32,
}

impl<R: RidgeNum, const K: usize> Normal<R, K> {
    /// All zero.
    pub fn new() -> Self {
        Self {
            a: [[R::ZERO; K]; K],
            b: [R::ZERO; K],
            mean: [R::ZERO; K],
            r_mean: R::ZERO,
            n: 0,
        }
    }
}

impl<R: RidgeNum, const K: usize> Default for Normal<R, K> {
    fn default() -> Self {
        Self::new()
    }
}

/// The sums in the ridge type, one rounded (saturating) operation at a time: with `centre`, a
/// pass for the means, then the centred products `d d^T` and `d t` (`d = v - m`,
/// `t = r - mean(r)`) summed example by example and divided by `n`.
pub fn rounded_sums<'a, S: Scalar, const K: usize>(
    examples: impl Iterator<Item = Result<Example<'a, S, K>>> + Clone,
    centre: bool,
    out: &mut Normal<S::Ridge, K>,
) -> Result<()> {
    let zero = <S::Ridge as RidgeNum>::ZERO;
    let target =
        |e: &Example<'a, S, K>| e.rating.to_ridge() - e.item_bias.to_ridge() - e.mu.to_ridge();
    let mut n = 0u32;
    if centre {
        for e in examples.clone() {
            let e = e?;
            for (m, v) in out.mean.iter_mut().zip(e.row) {
                *m = *m + v.to_ridge();
            }
            out.r_mean = out.r_mean + target(&e);
            n += 1;
        }
        for m in &mut out.mean {
            *m = m.div_count(n);
        }
        out.r_mean = out.r_mean.div_count(n);
    }
    let Normal {
        a, b, mean, r_mean, ..
    } = out;
    let mut d = [zero; K];
    n = 0;
    for e in examples {
        let e = e?;
        for ((d, v), m) in d.iter_mut().zip(e.row).zip(mean.iter()) {
            *d = v.to_ridge() - *m;
        }
        let t = target(&e) - *r_mean;
        for i in 0..K {
            let di = d[i];
            for (aij, dj) in a[i][..=i].iter_mut().zip(&d) {
                *aij = *aij + di * *dj;
            }
            b[i] = b[i] + di * t;
        }
        n += 1;
    }
    for i in 0..K {
        for aij in &mut a[i][..=i] {
            *aij = aij.div_count(n);
        }
        b[i] = b[i].div_count(n);
    }
    out.n = n;
    Ok(())
}

/// Q16.16 inputs at or above 128 in magnitude (raw `2^23`) are refused: below it every sum
/// of [`exact_sums_q16`] fits an `i64` for up to `2^16` examples.
const Q16_LIMIT: u32 = 1 << 23;

/// The sums of Q16.16 examples, exact: one pass accumulates, in integers, `sum v`, `sum r`,
/// `sum v r` and `sum v v^T` (products of raw `i32`s in `i64`, one `smlal` each on the M4;
/// no rounding, no saturation), then each entry is centred on the means `m`, `mean(r)`
/// rounded to [`R22`] by the identity
/// `sum (v_i - m_i)(v_j - m_j) = sum v_i v_j - m_i sum v_j - m_j sum v_i + n m_i m_j`
/// in `i128` and divided by `n` with one rounding. So the system is the rounded exact one
/// whatever `n`; the old per-example rounding is gone and the loop costs a few
/// instructions per product.
///
/// The `i64` sums of `v v^T` live in `out.a`'s own storage (no second `K x K` buffer on the
/// stack): the low word of entry `(i, j)`, `j < i`, in `a[i][j]`, its high word in the
/// unused upper triangle at `a[K-1-i][K-1-j]`, the diagonal's high words in a `K` array.
///
/// Row entries or targets of magnitude 128 or more, or more than `u16::MAX` examples, are
/// [`Error::RidgeOutOfRange`], as is a centred entry beyond [`R22`]'s ±512.
pub fn exact_sums_q16<'a, const K: usize>(
    examples: impl Iterator<Item = Result<Example<'a, Q16, K>>>,
    centre: bool,
    out: &mut Normal<R22, K>,
) -> Result<()> {
    let out_of_range = |what: &'static str, column: usize| Error::RidgeOutOfRange { what, column };
    let mut sum_v = [0i64; K];
    let mut sum_vr = [0i64; K];
    let mut diag_hi = [0i32; K];
    let mut sum_r = 0i64;
    let mut n = 0u32;
    let join = |lo: R22, hi: i32| (i64::from(hi) << 32) | i64::from(lo.to_bits() as u32);
    for row in out.a.iter_mut() {
        *row = [R22::ZERO; K];
    }
    for e in examples {
        let e = e?;
        if n > u32::from(u16::MAX) {
            return Err(out_of_range("example count", 0));
        }
        let r = i64::from(e.rating.to_bits())
            - i64::from(e.item_bias.to_bits())
            - i64::from(e.mu.to_bits());
        if r.unsigned_abs() >= u64::from(Q16_LIMIT) {
            return Err(out_of_range("target", 0));
        }
        if let Some(k) = e
            .row
            .iter()
            .position(|v| v.to_bits().unsigned_abs() >= Q16_LIMIT)
        {
            return Err(out_of_range("item row", k));
        }
        sum_r += r;
        for i in 0..K {
            let vi = i64::from(e.row[i].to_bits());
            sum_v[i] += vi;
            sum_vr[i] += vi * r;
            for j in 0..i {
                let acc = join(out.a[i][j], out.a[K - 1 - i][K - 1 - j].to_bits())
                    + vi * i64::from(e.row[j].to_bits());
                out.a[i][j] = R22::from_bits(acc as i32);
                out.a[K - 1 - i][K - 1 - j] = R22::from_bits((acc >> 32) as i32);
            }
            let acc = join(out.a[i][i], diag_hi[i]) + vi * vi;
            out.a[i][i] = R22::from_bits(acc as i32);
            diag_hi[i] = (acc >> 32) as i32;
        }
        n += 1;
    }
    out.n = n;
    if n == 0 {
        return Ok(());
    }
    let n64 = i64::from(n);
    // A mean with 22 fractional bits: |sum| < 2^39 (16 fractional bits), so `sum * 2^7` fits,
    // and |mean| < 128 fits R22.
    let mean_of = |sum: i64| ((sum * 128 + n64).div_euclid(2 * n64)) as i32;
    if centre {
        for (m, s) in out.mean.iter_mut().zip(&sum_v) {
            *m = R22::from_bits(mean_of(*s));
        }
        out.r_mean = R22::from_bits(mean_of(sum_r));
    } else {
        out.mean = [R22::ZERO; K];
        out.r_mean = R22::ZERO;
    }
    // sum (x - mx)(y - my) with 44 fractional bits, from sum xy (32), mx, my (22), sum x,
    // sum y (16): |terms| < 2^75.
    let centred = |sxy: i64, mx: i32, sy: i64, my: i32, sx: i64| -> i128 {
        let (mx, my) = (i128::from(mx), i128::from(my));
        (i128::from(sxy) << 12) - ((mx * i128::from(sy) + my * i128::from(sx)) << 6)
            + i128::from(n) * mx * my
    };
    // Its mean with 22 fractional bits, to nearest (ties up): floor((x + n 2^21) / (n 2^22))
    // = floor(floor((x + n 2^21) / 2^22) / n).
    let mean22 = |x: i128| -> Option<R22> {
        let q = i64::try_from((x + (i128::from(n) << 21)) >> 22).ok()?;
        i32::try_from(q.div_euclid(n64)).ok().map(R22::from_bits)
    };
    let m = out.mean.map(R22::to_bits);
    let r_mean = out.r_mean.to_bits();
    for i in 0..K {
        for j in 0..=i {
            let hi = if j == i {
                diag_hi[i]
            } else {
                out.a[K - 1 - i][K - 1 - j].to_bits()
            };
            let sum = join(out.a[i][j], hi);
            out.a[i][j] = mean22(centred(sum, m[i], sum_v[j], m[j], sum_v[i]))
                .ok_or(out_of_range("system", j))?;
        }
        out.b[i] = mean22(centred(sum_vr[i], m[i], sum_r, r_mean, sum_v[i]))
            .ok_or(out_of_range("right-hand side", i))?;
    }
    Ok(())
}
