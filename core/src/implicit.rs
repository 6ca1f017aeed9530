//! Implicit feedback (SVD++-style) as the learned prior mean of the exact solve
//! ([`crate::Reconstruction::ExactImplicit`]): where its extra rows live in the global matrix,
//! and the scale of the implicit sum.
//!
//! The extra rows are ordinary rows of width `K` after the catalogue, so the wire format, the
//! server's aggregation and its optimizer treat them exactly as item rows: implicit row of item
//! `j` at `items + j`, the global mean row `m` at `2 * items`.

/// The largest catalogue with implicit rows: `2 * items + 1` row ids must fit a `u32`.
pub const MAX_ITEMS: u32 = (u32::MAX - 1) / 2;

/// The implicit-feedback terms of a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Implicit {
    /// The catalogue size: ratings name items `0..items`.
    pub items: u32,
    /// Step of an implicit row relative to the mean row's (before the `n^(-1/2)` scale).
    pub lr: f32,
    /// Train on both halves: a second pass reconstructs on the post half and trains the
    /// reconstruction half's rows ([`crate::Reconstruction::ExactImplicit`]).
    pub both_halves: bool,
}

impl Implicit {
    /// Row id of `item`'s implicit factor.
    pub const fn implicit_row(self, item: u32) -> u32 {
        self.items + item
    }

    /// Row id of the learned prior mean `m`.
    pub const fn mean_row(self) -> u32 {
        2 * self.items
    }

    /// Rows of the global matrix: items, implicit rows, the mean row.
    pub const fn rows(self) -> u32 {
        2 * self.items + 1
    }
}

/// `n^(-1/2)`, the weight of each implicit row in a sum over `n` examples (SVD++'s
/// normalisation: the sum's size does not grow with how much a user rated). An IEEE square
/// root and division, both correctly rounded, so every target gets the same bits.
pub fn sum_scale(n: u32) -> f32 {
    1.0 / libm::sqrtf(n as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_every_row_after_the_catalogue() {
        let imp = Implicit {
            items: 7,
            lr: 1.0,
            both_halves: false,
        };
        assert_eq!(imp.implicit_row(0), 7);
        assert_eq!(imp.implicit_row(6), 13);
        assert_eq!(imp.mean_row(), 14);
        assert_eq!(imp.rows(), 15);
        let widest = Implicit {
            items: MAX_ITEMS,
            lr: 1.0,
            both_halves: false,
        };
        assert_eq!(widest.mean_row(), u32::MAX - 1);
    }

    #[test]
    fn sum_scale_is_the_inverse_square_root() {
        assert_eq!(sum_scale(1), 1.0);
        assert_eq!(sum_scale(4), 0.5);
        assert_eq!(sum_scale(100), 0.1);
    }
}
