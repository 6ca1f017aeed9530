//! The one error type of the device round: every way a round can refuse its input.

use core::fmt;

/// Which phase of a round an error or a split refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Reconstruction of the local user embedding (item rows frozen).
    Reconstruction,
    /// Post-reconstruction training of the item rows (user embedding frozen), or evaluation.
    PostReconstruction,
}

/// Everything that can go wrong in `fedrecon-core`. Nothing in the crate panics on bad input;
/// it returns one of these instead.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A bounded buffer is full: `what` names the buffer, `capacity` its compile-time size.
    CapacityExceeded {
        /// The buffer that ran out of room.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// An item id is not below the number of items the round was given.
    ItemOutOfRange {
        /// The offending item id.
        item: u32,
        /// The number of items (valid ids are `0..num_items`).
        num_items: u32,
    },
    /// The item-row view has no row for an item the client needs.
    MissingItemRow {
        /// The item whose row is missing.
        item: u32,
    },
    /// A rating is NaN or infinite, or outside the accepted range.
    InvalidRating {
        /// Position of the example in the client's dataset.
        index: usize,
    },
    /// A value that must be finite is not (a learning rate, a row value, a user embedding).
    NonFinite {
        /// What was not finite.
        what: &'static str,
    },
    /// A hyperparameter is out of its valid range.
    InvalidConfig {
        /// The field at fault and why.
        what: &'static str,
    },
    /// Exact reconstruction's ridge system has a pivot below half the regulariser (or NaN):
    /// the regulariser is too small for the scalar's resolution, or an input saturated or is
    /// not finite.
    IllConditioned {
        /// The column of the factorisation where the pivot failed.
        column: usize,
    },
    /// A value of exact reconstruction's fixed-point ridge system is beyond its number type's
    /// range (an item row or rating target too large for it, or a regulariser so small that
    /// a pivot's reciprocal or the solution overflows): refused instead of saturated.
    RidgeOutOfRange {
        /// Which value: "item row", "target", "system", "factor", "pivot", "solution", ...
        what: &'static str,
        /// The column (embedding entry) concerned.
        column: usize,
    },
    /// A phase of the round has no batch to run (e.g. a client with a single batch and
    /// `split_dataset`).
    EmptySplit {
        /// The phase that is empty.
        phase: Phase,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CapacityExceeded { what, capacity } => {
                write!(f, "{what} is full (capacity {capacity})")
            }
            Error::ItemOutOfRange { item, num_items } => {
                write!(
                    f,
                    "item id {item} is out of range (the model has {num_items} items)"
                )
            }
            Error::MissingItemRow { item } => write!(f, "no item row available for item {item}"),
            Error::InvalidRating { index } => {
                write!(
                    f,
                    "rating of example {index} is not a finite value in range"
                )
            }
            Error::NonFinite { what } => write!(f, "{what} is not finite"),
            Error::InvalidConfig { what } => write!(f, "invalid round configuration: {what}"),
            Error::IllConditioned { column } => write!(
                f,
                "exact reconstruction's system is singular or ill-conditioned at column {column} \
                 (pivot below half of user_l2: raise user_l2)"
            ),
            Error::RidgeOutOfRange { what, column } => write!(
                f,
                "exact reconstruction's {what} at column {column} is beyond the fixed-point \
                 solve's range (item rows or ratings too large, or user_l2 too small)"
            ),
            Error::EmptySplit { phase } => write!(f, "the {phase:?} phase has no examples"),
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T> = core::result::Result<T, Error>;
