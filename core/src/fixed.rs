//! Fixed-point [`Scalar`]s for microcontrollers without an FPU, and for halving row memory.
//!
//! - [`Q16`] (Q16.16 in an `i32`): range ±32768, resolution 1.5e-5. The safe default: 16
//!   integer bits give head-room for any rating-scale value, 16 fractional bits resolve about
//!   0.03 % of the 0.05 initialisation scale.
//! - [`Q12`] (Q3.12 in an `i16`): range ±8, resolution 2.4e-4. Half the memory for cached and
//!   trained rows; ratings (<= 5), predictions and embedding entries of MovieLens models fit,
//!   and the error metrics are summed in f32 (see [`crate::Metrics::record`]) so a squared
//!   error never saturates.
//!
//! Every operation saturates at the range ends instead of wrapping, and rounds to nearest with
//! ties towards +infinity, in integer arithmetic only, so a board and the host give the same
//! bits. Products are formed exactly in the double-width integer before rounding; dot
//! products accumulate the exact products in a quadruple-width integer (`i128` for Q16,
//! `i64` for Q12) and round once, so K = 64 worst-case operands cannot overflow. (The `fixed`
//! crate's plain multiply floors, which biases SGD steps downwards, and it has no wide dot
//! product; hence these small types.)
//!
//! Representation error: `from_f32` rounds to the nearest multiple of the resolution
//! (half of it at most: 7.6e-6 for Q16, 1.2e-4 for Q12). The 0.5 accuracy threshold, integer
//! ratings and half-star ratings are exact in both; learning rates 0.1 and 0.5 are within
//! 0.01 % (Q16) and 0.05 % (Q12: 0.1 becomes 0.10009765625).

use crate::ridge::{R20, R22};
use crate::scalar::{Scalar, ScalarKind};
use core::ops::{Add, Mul, Neg, Sub};
use serde::{Deserialize, Serialize};

macro_rules! fixed_scalar {
    (
        $(#[$doc:meta])*
        $name:ident, $raw:ty, $wide:ty, $acc:ty, $frac:expr, $kind:expr, int: $int:ty,
        ridge: $ridge:ty, $ridge_raw:ty $(, sums: $sums:path)?
    ) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize,
            Deserialize, postcard::experimental::max_size::MaxSize,
        )]
        #[serde(transparent)]
        pub struct $name($raw);

        impl $name {
            /// Fractional bits.
            pub const FRAC_BITS: u32 = $frac;
            /// Largest value.
            pub const MAX: Self = Self(<$raw>::MAX);
            /// Smallest value.
            pub const MIN: Self = Self(<$raw>::MIN);
            /// Smallest positive value, one unit in the last place.
            pub const EPSILON: Self = Self(1);

            /// From raw bits (`value * 2^FRAC_BITS`).
            pub const fn from_bits(bits: $raw) -> Self {
                Self(bits)
            }

            /// Raw bits (`value * 2^FRAC_BITS`).
            pub const fn to_bits(self) -> $raw {
                self.0
            }

            /// An integer, saturating.
            pub const fn from_int(n: $int) -> Self {
                Self((n as $raw).saturating_mul(1 << Self::FRAC_BITS))
            }

            /// Rounds a value with `2 * FRAC_BITS` fractional bits to `FRAC_BITS`, saturating.
            #[inline]
            fn round_wide(x: $acc) -> Self {
                let r = (x + (1 << (Self::FRAC_BITS - 1))) >> Self::FRAC_BITS;
                Self(r.clamp(<$acc>::from(<$raw>::MIN), <$acc>::from(<$raw>::MAX)) as $raw)
            }
        }

        impl Add for $name {
            type Output = Self;
            #[inline]
            fn add(self, rhs: Self) -> Self {
                Self(self.0.saturating_add(rhs.0))
            }
        }

        impl Sub for $name {
            type Output = Self;
            #[inline]
            fn sub(self, rhs: Self) -> Self {
                Self(self.0.saturating_sub(rhs.0))
            }
        }

        impl Neg for $name {
            type Output = Self;
            #[inline]
            fn neg(self) -> Self {
                Self(self.0.saturating_neg())
            }
        }

        impl Mul for $name {
            type Output = Self;
            #[inline]
            fn mul(self, rhs: Self) -> Self {
                let p = <$wide>::from(self.0) * <$wide>::from(rhs.0);
                // |p| <= 2^(2 * bits - 2), so the rounding add cannot overflow.
                let r = (p + (1 << (Self::FRAC_BITS - 1))) >> Self::FRAC_BITS;
                Self(r.clamp(<$wide>::from(<$raw>::MIN), <$wide>::from(<$raw>::MAX)) as $raw)
            }
        }

        impl Scalar for $name {
            const ZERO: Self = Self(0);
            const ONE: Self = Self(1 << $frac);
            const KIND: ScalarKind = $kind;
            type Ridge = $ridge;

            /// Exact where the ridge type's range holds the value (it has more fractional
            /// bits), saturating beyond.
            #[inline]
            fn to_ridge(self) -> $ridge {
                <$ridge>::from_bits(
                    <$ridge_raw>::from(self.0).saturating_mul(1 << (<$ridge>::FRAC_BITS - $frac)),
                )
            }

            $(
                fn ridge_sums<'a, const K: usize>(
                    examples: impl Iterator<Item = crate::error::Result<crate::ridge::normal::Example<'a, Self, K>>> + Clone,
                    centre: bool,
                    out: &mut crate::ridge::normal::Normal<$ridge, K>,
                ) -> crate::error::Result<()> {
                    $sums(examples, centre, out)
                }
            )?

            /// Nearest (ties up), saturating.
            #[inline]
            fn from_ridge(x: $ridge) -> Self {
                let shift = <$ridge>::FRAC_BITS - $frac;
                let r = x.to_bits().saturating_add(1 << (shift - 1)) >> shift;
                Self(r.clamp(<$ridge_raw>::from(<$raw>::MIN), <$ridge_raw>::from(<$raw>::MAX)) as $raw)
            }

            fn from_f32(x: f32) -> Self {
                if x.is_nan() {
                    return Self(0);
                }
                // Scaling by a power of two is exact (or overflows to infinity, caught below).
                let scaled = x * (1u32 << Self::FRAC_BITS) as f32;
                if scaled >= <$raw>::MAX as f32 {
                    Self::MAX
                } else if scaled <= <$raw>::MIN as f32 {
                    Self::MIN
                } else {
                    // Nearest, ties towards +infinity, like every other rounding here.
                    Self(libm::floorf(scaled + 0.5) as $raw)
                }
            }

            #[inline]
            fn to_f32(self) -> f32 {
                self.0 as f32 * (1.0 / (1u32 << Self::FRAC_BITS) as f32)
            }

            #[inline]
            fn div_count(self, n: u32) -> Self {
                if n == 0 {
                    return self;
                }
                let n = i64::from(n);
                Self((i64::from(self.0) * 2 + n).div_euclid(2 * n) as $raw)
            }

            #[inline]
            fn is_finite(self) -> bool {
                true
            }

            #[inline]
            fn abs(self) -> Self {
                Self(self.0.saturating_abs())
            }

            #[inline]
            fn total_cmp(&self, other: &Self) -> core::cmp::Ordering {
                self.0.cmp(&other.0)
            }

            /// Exact products summed in the quadruple-width accumulator, rounded once.
            #[inline]
            fn dot(a: &[Self], b: &[Self]) -> Self {
                let mut acc: $acc = 0;
                for (x, y) in a.iter().zip(b) {
                    acc += <$acc>::from(<$wide>::from(x.0) * <$wide>::from(y.0));
                }
                Self::round_wide(acc)
            }
        }
    };
}

fixed_scalar!(
    /// Q16.16: `bits / 65536` in an `i32`, saturating, round-to-nearest.
    Q16, i32, i64, i128, 16, ScalarKind::Q16_16, int: i16, ridge: R22, i32,
    sums: crate::ridge::normal::exact_sums_q16
);

fixed_scalar!(
    /// Q3.12: `bits / 4096` in an `i16`, saturating, round-to-nearest. Half the memory of f32
    /// and Q16 for every row a device holds.
    Q12, i16, i32, i64, 12, ScalarKind::Q3_12, int: i8, ridge: R20, i32
);
