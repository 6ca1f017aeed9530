//! Exact reconstruction: with the item rows fixed, the user embedding (and user bias) that
//! minimises the reconstruction half's mean squared error plus `lambda * |u|^2` is the
//! solution of a small ridge system, solved here without `alloc`.
//!
//! For examples `j = 1..n` with rows `v_j` and targets `r_j = y_j [- b_i] [- mu]`:
//! - with a user bias (left unregularised), eliminating it first centres the data:
//!   `(C + lambda I) u = c`, `b_u = mean(r) - dot(mean(v), u)`, where
//!   `C = mean((v_j - m)(v_j - m)^T)`, `c = mean((v_j - m)(r_j - mean(r)))`, `m = mean(v)`;
//! - without: `(G + lambda I) u = g`, `G = mean(v_j v_j^T)`, `g = mean(v_j r_j)`.
//!
//! Both matrices are `lambda I` plus a positive semidefinite matrix, so every pivot of the
//! square-root-free Cholesky factorisation `A = L D L^T` is at least `lambda` in exact
//! arithmetic: the regulariser is what makes the system solvable and bounds its condition
//! number by `(lambda_max + lambda) / lambda`. A computed pivot below `lambda / 2` (rounding,
//! saturation, a regulariser below the number type's resolution, a NaN row) is refused with
//! [`Error::IllConditioned`] instead of returning a meaningless embedding.
//!
//! The solve runs in [`Scalar::Ridge`]: `f32` for `f32` devices; for fixed point a wider fixed
//! point with more fractional bits ([`R20`] for Q3.12, [`R32`] for Q16.16), so the Gram sums,
//! the factor and the two triangular solves keep far more precision than the device scalar and
//! only the final embedding is rounded to it. Arithmetic is in a fixed order with no fused
//! operations, so a board and the simulator get the same bits.

use crate::error::{Error, Result};
use core::ops::{Add, Mul, Neg, Sub};

/// The number type of the ridge solve: add, subtract, multiply (rounded to nearest,
/// saturating for fixed point), divide by a count, and a reciprocal of a positive pivot.
pub trait RidgeNum:
    Copy
    + PartialOrd
    + core::fmt::Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// Nearest representable value of `x` (saturating).
    fn from_f32(x: f32) -> Self;
    /// Widening conversion, for reporting.
    fn to_f32(self) -> f32;
    /// `self / n` for a count `n > 0`, rounded to nearest.
    fn div_count(self, n: u32) -> Self;
    /// `1 / self` for `self > 0`, rounded to nearest (saturating).
    fn recip(self) -> Self;
    /// Half of `self` (the pivot guard `lambda / 2`).
    fn half(self) -> Self;
}

impl RidgeNum for f32 {
    const ZERO: Self = 0.0;
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
        self / n as f32
    }
    #[inline]
    fn recip(self) -> Self {
        1.0 / self
    }
    #[inline]
    fn half(self) -> Self {
        self * 0.5
    }
}

macro_rules! ridge_fixed {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $wide:ty, $frac:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
        pub struct $name($raw);

        impl $name {
            /// Fractional bits.
            pub const FRAC_BITS: u32 = $frac;

            /// From raw bits (`value * 2^FRAC_BITS`).
            pub const fn from_bits(bits: $raw) -> Self {
                Self(bits)
            }

            /// Raw bits (`value * 2^FRAC_BITS`).
            pub const fn to_bits(self) -> $raw {
                self.0
            }

            /// Saturates a double-width value into the raw type.
            #[inline]
            fn sat(x: $wide) -> Self {
                Self(x.clamp(<$wide>::from(<$raw>::MIN), <$wide>::from(<$raw>::MAX)) as $raw)
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
            /// Exact double-width product, rounded to nearest (ties up), saturating.
            #[inline]
            fn mul(self, rhs: Self) -> Self {
                let p = <$wide>::from(self.0) * <$wide>::from(rhs.0);
                Self::sat((p + (1 << ($frac - 1))) >> $frac)
            }
        }

        impl RidgeNum for $name {
            const ZERO: Self = Self(0);

            fn from_f32(x: f32) -> Self {
                if x.is_nan() {
                    return Self(0);
                }
                // In f64: every f32 and its exact scaling by 2^FRAC fit, so this is the nearest.
                let scaled = f64::from(x) * (1u64 << $frac) as f64;
                if scaled >= <$raw>::MAX as f64 {
                    Self(<$raw>::MAX)
                } else if scaled <= <$raw>::MIN as f64 {
                    Self(<$raw>::MIN)
                } else {
                    Self(libm::floor(scaled + 0.5) as $raw)
                }
            }

            #[inline]
            fn to_f32(self) -> f32 {
                (self.0 as f64 / (1u64 << $frac) as f64) as f32
            }

            #[inline]
            fn div_count(self, n: u32) -> Self {
                if n == 0 {
                    return self;
                }
                let n = <$wide>::from(n);
                Self::sat((<$wide>::from(self.0) * 2 + n).div_euclid(2 * n))
            }

            #[inline]
            fn recip(self) -> Self {
                if self.0 <= 0 {
                    return Self(<$raw>::MAX);
                }
                let d = <$wide>::from(self.0);
                let one_sq: $wide = 1 << (2 * $frac);
                Self::sat((2 * one_sq + d).div_euclid(2 * d))
            }

            #[inline]
            fn half(self) -> Self {
                Self(self.0 >> 1)
            }
        }
    };
}

ridge_fixed!(
    /// The ridge solve of Q3.12 devices: Q11.20 in an `i32` (range ±2048, resolution 9.5e-7,
    /// 256 times finer than Q3.12), products in `i64`.
    R20, i32, i64, 20
);

ridge_fixed!(
    /// The ridge solve of Q16.16 devices: Q31.32 in an `i64` (range ±2^31, resolution
    /// 2.3e-10, 65536 times finer than Q16.16), products in `i128`.
    R32, i64, i128, 32
);

/// Solves `A x = b` in place for a symmetric `A` of which only the lower triangle (diagonal
/// included) is read, by `A = L D L^T`: on return `b` holds `x` and the lower triangle holds
/// `L` (unit diagonal implied) with `D` on the diagonal. `min_pivot` is the smallest pivot
/// accepted (`lambda / 2`); a smaller or NaN pivot is [`Error::IllConditioned`] naming the
/// column. About `K^3 / 6` multiply-adds, `K` reciprocals, no square root.
pub fn solve_ldlt<R: RidgeNum, const K: usize>(
    a: &mut [[R; K]; K],
    b: &mut [R; K],
    min_pivot: R,
) -> Result<()> {
    let inv_d = factor_ldlt(a, min_pivot)?;
    substitute_ldlt(a, &inv_d, b);
    Ok(())
}

/// Factors `A = L D L^T` in place (the lower triangle holds `L`, the diagonal `D`) and returns
/// `1 / D`, so further right-hand sides cost only [`substitute_ldlt`] (`K^2` multiply-adds).
/// Refuses a pivot below `min_pivot` as [`solve_ldlt`] does.
pub fn factor_ldlt<R: RidgeNum, const K: usize>(
    a: &mut [[R; K]; K],
    min_pivot: R,
) -> Result<[R; K]> {
    // inv_d[j] = 1 / D[j]; t = row j of L scaled by D, reused for every row below j.
    let mut inv_d = [R::ZERO; K];
    let mut t = [R::ZERO; K];
    for j in 0..K {
        let mut d = a[j][j];
        for k in 0..j {
            t[k] = a[j][k] * a[k][k];
            d = d - a[j][k] * t[k];
        }
        // Written as `ok` so that NaN (which compares false) is refused too; a zero pivot is
        // refused even when the guard rounded to zero.
        let ok = d >= min_pivot && d > R::ZERO;
        if !ok {
            return Err(Error::IllConditioned { column: j });
        }
        a[j][j] = d;
        inv_d[j] = d.recip();
        for row in a[j + 1..].iter_mut() {
            let mut s = row[j];
            for (l, tk) in row[..j].iter().zip(&t[..j]) {
                s = s - *l * *tk;
            }
            row[j] = s * inv_d[j];
        }
    }
    Ok(inv_d)
}

/// Solves `A x = b` in place with the factor [`factor_ldlt`] left in `a` and its `1 / D`.
pub fn substitute_ldlt<R: RidgeNum, const K: usize>(
    a: &[[R; K]; K],
    inv_d: &[R; K],
    b: &mut [R; K],
) {
    // L z = b, then z = z / D, then L^T x = z.
    for i in 0..K {
        let mut s = b[i];
        for k in 0..i {
            s = s - a[i][k] * b[k];
        }
        b[i] = s;
    }
    for i in 0..K {
        b[i] = b[i] * inv_d[i];
    }
    for i in (0..K).rev() {
        let mut s = b[i];
        for k in i + 1..K {
            s = s - a[k][i] * b[k];
        }
        b[i] = s;
    }
}
