//! The number type of the round. The round code is written once against [`Scalar`], so a
//! fixed-point format drops in without touching it; [`f32`] is the reference implementation.

use crate::error::Result;
use crate::ridge::RidgeNum;
use crate::ridge::normal::{Example, Normal};
use core::fmt::Debug;
use core::ops::{Add, Mul, Neg, Sub};

/// Which scalar a build or a message uses (sent in the wire hello so peers agree).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
pub enum ScalarKind {
    /// IEEE-754 binary32.
    F32,
    /// Signed fixed point with 16 integer and 16 fractional bits (`i32`).
    Q16_16,
    /// Signed fixed point with 3 integer and 12 fractional bits (`i16`).
    Q3_12,
}

/// Arithmetic the round needs. Implementations must be deterministic: the same operands give
/// the same bits on every target (no fused multiply-add, no target-dependent rounding), so a
/// board and the simulator compute identical updates.
pub trait Scalar:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Which kind this is, for the wire hello.
    const KIND: ScalarKind;
    /// The number type exact reconstruction solves its ridge system in (see [`crate::ridge`]).
    type Ridge: RidgeNum;

    /// Into the ridge type (exact for every scalar here; Q16.16 only below 512 in magnitude,
    /// saturating beyond, which its exact sums refuse before converting).
    fn to_ridge(self) -> Self::Ridge;
    /// From the ridge type, to nearest (saturating for fixed point).
    fn from_ridge(x: Self::Ridge) -> Self;

    /// Sums exact reconstruction's normal equations over `examples` into `out`, centred
    /// when `centre` (a user bias). The default sums in the ridge type one rounded operation
    /// at a time ([`crate::ridge::normal::rounded_sums`]); Q16.16 sums exactly in integers.
    fn ridge_sums<'a, const K: usize>(
        examples: impl Iterator<Item = Result<Example<'a, Self, K>>> + Clone,
        centre: bool,
        out: &mut Normal<Self::Ridge, K>,
    ) -> Result<()> {
        crate::ridge::normal::rounded_sums(examples, centre, out)
    }

    /// Nearest representable value (saturating where the range is bounded). Used only for
    /// hyperparameters and initialisation, never in the per-example loop.
    fn from_f32(x: f32) -> Self;
    /// Widening conversion for reporting and aggregation.
    fn to_f32(self) -> f32;
    /// `self / n` for a count `n > 0` (batch means); `n == 0` returns `self` unchanged.
    fn div_count(self, n: u32) -> Self;
    /// False for NaN and infinities (always true for fixed point).
    fn is_finite(self) -> bool;
    /// Absolute value.
    fn abs(self) -> Self;
    /// A total order (for ranking): equal bits compare equal, NaN sorts above everything.
    fn total_cmp(&self, other: &Self) -> core::cmp::Ordering;

    /// Dot product of two equal-length slices, summed left to right. Implementations with a
    /// wider accumulator (fixed point) override it to avoid intermediate overflow.
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> Self {
        let mut acc = Self::ZERO;
        for (x, y) in a.iter().zip(b) {
            acc = acc + *x * *y;
        }
        acc
    }

    /// `y[i] = y[i] + alpha * x[i]` for all i, in index order.
    #[inline]
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = *yi + alpha * *xi;
        }
    }
}

/// Partial sums in the f32 dot product.
const LANES: usize = 8;

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const KIND: ScalarKind = ScalarKind::F32;
    type Ridge = f32;

    #[inline]
    fn to_ridge(self) -> f32 {
        self
    }
    #[inline]
    fn from_ridge(x: f32) -> f32 {
        x
    }

    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn div_count(self, n: u32) -> Self {
        if n == 0 { self } else { self / n as f32 }
    }
    #[inline]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline]
    fn abs(self) -> Self {
        libm::fabsf(self)
    }
    #[inline]
    fn total_cmp(&self, other: &Self) -> core::cmp::Ordering {
        f32::total_cmp(self, other)
    }

    /// Eight partial sums, lane `i % 8` taking `a[i] * b[i]` in index order, combined as
    /// `((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))`. The order is fixed, so every
    /// target gets the same bits, and independent lanes let the host vectorise it.
    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut s = [0.0f32; LANES];
        let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for j in 0..LANES {
                s[j] += x[j] * y[j];
            }
        }
        for (j, (x, y)) in ar.iter().zip(br).enumerate() {
            s[j] += x * y;
        }
        ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    }
}
