//! A board that keeps its own user's ratings (kinds 12 and 13): the server provisions the
//! dataset once (`Ratings`, then [`StoreRatings`]), the board keeps it in flash with a
//! checksum and announces it after every `Hello` with [`StoredData`], so the ratings never
//! travel again; rounds then carry only the `RoundStart` and the item rows.

use super::crc::Crc32;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// What a board holds of its own (kind 12, device → server): sent right after its `Hello`
/// when it has a stored dataset, and as the answer to [`StoreRatings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct StoredData {
    /// Ratings stored.
    pub ratings: u32,
    /// [`RatingsDigest`] of them, in stored order.
    pub digest: u32,
}

/// Keep the dataset of the last complete `Ratings` upload as the board's own (kind 13,
/// server → device): the board checks `ratings` and `digest` against that upload, writes it
/// to its flash and answers [`StoredData`] (or `Error`: `InvalidValue` on a mismatch,
/// `Other` when it has no storage or the write fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct StoreRatings {
    /// Ratings the server uploaded.
    pub ratings: u32,
    /// Their [`RatingsDigest`].
    pub digest: u32,
}

/// CRC-32 (WIRE.md section 1) over the ratings as `item: u32 LE ++ rating: f32 LE`, in upload
/// order: the dataset's identity on both sides.
#[derive(Debug, Clone, Default)]
pub struct RatingsDigest {
    crc: Crc32,
    count: u32,
}

impl RatingsDigest {
    /// The digest of no ratings.
    pub const fn new() -> Self {
        Self {
            crc: Crc32::new(),
            count: 0,
        }
    }

    /// Adds one rating.
    pub fn push(&mut self, item: u32, rating: f32) {
        self.crc.update(&item.to_le_bytes());
        self.crc.update(&rating.to_le_bytes());
        self.count += 1;
    }

    /// Ratings added.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The digest so far.
    pub fn finish(&self) -> u32 {
        self.crc.finish()
    }

    /// The digest of `items` / `ratings` (parallel).
    pub fn of(items: &[u32], ratings: &[f32]) -> StoredData {
        let mut d = Self::new();
        for (&i, &r) in items.iter().zip(ratings) {
            d.push(i, r);
        }
        StoredData {
            ratings: d.count(),
            digest: d.finish(),
        }
    }
}
