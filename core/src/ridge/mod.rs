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
//! The solve runs in [`Scalar::Ridge`](crate::Scalar::Ridge): `f32` for `f32` devices; for
//! fixed point a wider fixed point with more fractional bits ([`R20`] for Q3.12, [`R22`] for
//! Q16.16), so the Gram sums, the factor and the two triangular solves keep more precision
//! than the device scalar and only the final embedding is rounded to it. Arithmetic is in a
//! fixed order with no fused operations, so a board and the simulator get the same bits.
//! [`normal`] sums the system; Q16.16 sums it exactly in integers and [`R22`] rounds each
//! inner product of the factorisation once, refusing any value beyond its range with
//! [`Error::RidgeOutOfRange`] rather than saturating.

pub mod normal;

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

    /// `init + sum(a * b)` over `pairs` in order (`init - sum(a * b)` when `SUB`), or `None`
    /// when the result leaves the type's range. The default rounds (and, for fixed point,
    /// saturates) one operation at a time, as `f32` and [`R20`] always have; [`R22`] sums the
    /// exact products and rounds once.
    #[inline]
    fn sum_products<const SUB: bool>(
        init: Self,
        pairs: impl Iterator<Item = (Self, Self)>,
    ) -> Option<Self> {
        let mut s = init;
        for (a, b) in pairs {
            s = if SUB { s - a * b } else { s + a * b };
        }
        Some(s)
    }

    /// [`RidgeNum::from_f32`], or `None` when `x` is beyond the range (default: never,
    /// saturating).
    #[inline]
    fn checked_from_f32(x: f32) -> Option<Self> {
        Some(Self::from_f32(x))
    }

    /// `self + rhs`, or `None` when it leaves the range (default: never, saturating).
    #[inline]
    fn checked_add(self, rhs: Self) -> Option<Self> {
        Some(self + rhs)
    }

    /// `self * rhs`, or `None` when it leaves the range (default: never, saturating).
    #[inline]
    fn checked_mul(self, rhs: Self) -> Option<Self> {
        Some(self * rhs)
    }

    /// [`RidgeNum::recip`], or `None` when it leaves the range (default: never, saturating).
    #[inline]
    fn checked_recip(self) -> Option<Self> {
        Some(self.recip())
    }
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
    ($(#[$doc:meta])* $name:ident, $raw:ty, $wide:ty, $frac:expr $(, checked: $($checked:item)*)?) => {
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

            $($($checked)*)?
        }
    };
}

ridge_fixed!(
    /// The ridge solve of Q3.12 devices: Q11.20 in an `i32` (range ±2048, resolution 9.5e-7,
    /// 256 times finer than Q3.12), products in `i64`.
    R20, i32, i64, 20
);

ridge_fixed!(
    /// The ridge solve of Q16.16 devices: Q9.22 in an `i32` (range ±512, resolution 2.4e-7,
    /// 64 times finer than Q16.16), products exact in `i64`. An `i32` with `i64` products is
    /// what a 32-bit core multiplies in one instruction (`smull` / `smlal` on the M4); the
    /// `i64` / `i128` Q31.32 it replaces cost 17.3 M instructions per K = 50 solve on the
    /// M4F (this one 2.5 M, `firmware/README.md`). The Gram sums are exact integers ([`normal`]) and every inner product of the
    /// factorisation is summed exactly in `i64` and rounded once, so each entry carries one
    /// rounding of at most 1.2e-7; the Q16.16 rows and ratings it solves for were rounded by
    /// up to 7.6e-6, 64 times more, so the solve adds little to the error the scalar has.
    ///
    /// Ranges: the system is `lambda I` plus a mean of products of centred rows, so its
    /// entries are at most `max |v - m|^2 + lambda`; pivots lie in `[lambda / 2, a_jj]` and
    /// their reciprocals up to `2 / lambda` (512 at `lambda = 1 / 256`); the solution of a
    /// ridge regression is at most `rms(r) / (2 sqrt(lambda))` (25 for centred 1-5 ratings at
    /// `lambda = 0.01`). A value beyond ±512 (a Gram entry, i.e. centred row entries above
    /// about 22; a pivot's reciprocal, i.e. a regulariser below about 0.004; a regulariser of
    /// 512 or more) makes the checked operations return `None` and the solve
    /// [`Error::RidgeOutOfRange`]: refused, never saturated into a wrong embedding.
    R22, i32, i64, 22, checked:
        /// Exact products summed in `i64` (overflow tracked), rounded once (ties up).
        #[inline]
        fn sum_products<const SUB: bool>(
            init: Self,
            pairs: impl Iterator<Item = (Self, Self)>,
        ) -> Option<Self> {
            let mut acc = i64::from(init.0) << 22;
            let mut overflow = false;
            for (a, b) in pairs {
                let p = i64::from(a.0) * i64::from(b.0);
                let (s, o) = if SUB {
                    acc.overflowing_sub(p)
                } else {
                    acc.overflowing_add(p)
                };
                acc = s;
                overflow |= o;
            }
            if overflow {
                return None;
            }
            R22::round_checked(acc)
        }

        fn checked_from_f32(x: f32) -> Option<Self> {
            let r = R22::from_f32(x);
            (r.0 != i32::MAX && r.0 != i32::MIN).then_some(r)
        }

        #[inline]
        fn checked_add(self, rhs: Self) -> Option<Self> {
            self.0.checked_add(rhs.0).map(Self)
        }

        #[inline]
        fn checked_mul(self, rhs: Self) -> Option<Self> {
            R22::round_checked(i64::from(self.0) * i64::from(rhs.0))
        }

        #[inline]
        fn checked_recip(self) -> Option<Self> {
            if self.0 <= 0 {
                return None;
            }
            let d = i64::from(self.0);
            i32::try_from((2 * (1i64 << 44) + d).div_euclid(2 * d))
                .ok()
                .map(Self)
        }
);

impl R22 {
    /// Rounds a value with 44 fractional bits (a product, or a sum of them) to nearest, ties
    /// up; `None` beyond the range.
    #[inline]
    pub(crate) fn round_checked(x: i64) -> Option<Self> {
        let r = x.checked_add(1 << 21)? >> 22;
        i32::try_from(r).ok().map(Self)
    }
}

/// Solves `A x = b` in place for a symmetric `A` of which only the lower triangle (diagonal
/// included) is read, by `A = L D L^T`: on return `b` holds `x` and the lower triangle holds
/// `L` (unit diagonal implied) with `D` on the diagonal. `min_pivot` is the smallest pivot
/// accepted (`lambda / 2`); a smaller or NaN pivot is [`Error::IllConditioned`] naming the
/// column, a value beyond a fixed-point type's range [`Error::RidgeOutOfRange`]. About
/// `K^3 / 6` multiply-adds, `K` reciprocals, no square root. Each inner product is one
/// [`RidgeNum::sum_products`], so fixed point may round it once.
pub fn solve_ldlt<R: RidgeNum, const K: usize>(
    a: &mut [[R; K]; K],
    b: &mut [R; K],
    min_pivot: R,
) -> Result<()> {
    let inv_d = factor_ldlt(a, min_pivot)?;
    substitute_ldlt(a, &inv_d, b)
}

/// Factors `A = L D L^T` in place (the lower triangle holds `L`, the diagonal `D`) and returns
/// `1 / D`, so a further right-hand side costs only [`substitute_ldlt`] (`K^2` multiply-adds;
/// the learned prior mean's step needs one). Refuses pivots as [`solve_ldlt`] does.
pub fn factor_ldlt<R: RidgeNum, const K: usize>(
    a: &mut [[R; K]; K],
    min_pivot: R,
) -> Result<[R; K]> {
    let range = |what: &'static str, column: usize| Error::RidgeOutOfRange { what, column };
    // inv_d[j] = 1 / D[j]; t = row j of L scaled by D, reused for every row below j.
    let mut inv_d = [R::ZERO; K];
    let mut t = [R::ZERO; K];
    for j in 0..K {
        // t[k] = L[j][k] D[k], formed while the pivot's inner product reads it.
        let mut t_ok = true;
        let (row_j, above) = a[..=j].split_last_mut().unwrap_or_else(|| unreachable!());
        let d = R::sum_products::<true>(
            row_j[j],
            row_j[..j]
                .iter()
                .zip(&mut t[..j])
                .zip(above.iter())
                .enumerate()
                .map(|(k, ((l, tk), row_k))| {
                    let (p, ok) = match l.checked_mul(row_k[k]) {
                        Some(p) => (p, true),
                        None => (R::ZERO, false),
                    };
                    t_ok &= ok;
                    *tk = p;
                    (*l, p)
                }),
        );
        let d = match (d, t_ok) {
            (Some(d), true) => d,
            _ => return Err(range("pivot", j)),
        };
        // Written as `ok` so that NaN (which compares false) is refused too; a zero pivot is
        // refused even when the guard rounded to zero.
        let ok = d >= min_pivot && d > R::ZERO;
        if !ok {
            return Err(Error::IllConditioned { column: j });
        }
        a[j][j] = d;
        inv_d[j] = d
            .checked_recip()
            .ok_or_else(|| range("pivot reciprocal", j))?;
        for row in a[j + 1..].iter_mut() {
            let s = R::sum_products::<true>(
                row[j],
                row[..j].iter().copied().zip(t[..j].iter().copied()),
            )
            .ok_or_else(|| range("factor", j))?;
            row[j] = s.checked_mul(inv_d[j]).ok_or_else(|| range("factor", j))?;
        }
    }
    Ok(inv_d)
}

/// Solves `A x = b` in place with the factor [`factor_ldlt`] left in `a` and its `1 / D`.
pub fn substitute_ldlt<R: RidgeNum, const K: usize>(
    a: &[[R; K]; K],
    inv_d: &[R; K],
    b: &mut [R; K],
) -> Result<()> {
    let range = |what: &'static str, column: usize| Error::RidgeOutOfRange { what, column };
    // L z = b, then z = z / D, then L^T x = z.
    for i in 0..K {
        let (done, rest) = b.split_at_mut(i);
        rest[0] =
            R::sum_products::<true>(rest[0], a[i][..i].iter().copied().zip(done.iter().copied()))
                .ok_or_else(|| range("solution", i))?;
    }
    for i in 0..K {
        b[i] = b[i]
            .checked_mul(inv_d[i])
            .ok_or_else(|| range("solution", i))?;
    }
    for i in (0..K).rev() {
        let (head, done) = b.split_at_mut(i + 1);
        head[i] = R::sum_products::<true>(
            head[i],
            (i + 1..K).map(|k| a[k][i]).zip(done.iter().copied()),
        )
        .ok_or_else(|| range("solution", i))?;
    }
    Ok(())
}
