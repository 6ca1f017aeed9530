//! The client dataset pipeline of docs/SEMANTICS.md ("One client's round", steps 1–2): cap, seeded
//! shuffle, batches, even/odd batch split (or reuse), each phase's batches repeated for its
//! epochs and then capped at its `steps_max` (the cap counts across epochs).
//!
//! Batches are index ranges into a permutation of the capped examples, so nothing is copied.

use crate::error::{Error, Phase, Result};
use crate::rng::DeviceRng;
use serde::{Deserialize, Serialize};

/// How a client turns its examples into the two phases' batch sequences.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
pub struct SplitConfig {
    /// Examples per batch (the last batch may be short).
    pub batch_size: u16,
    /// Keep only the first `max_examples` in stored order (before shuffling), as the tutorial's
    /// `take(300)`; `None` keeps all.
    pub max_examples: Option<u16>,
    /// Shuffle the kept examples with this seed before batching; `None` keeps stored order.
    pub shuffle_seed: Option<u64>,
    /// `true`: even batches reconstruct, odd batches train/evaluate (disjoint halves).
    /// `false`: both phases see every batch (training only; evaluation requires `true`).
    pub split_dataset: bool,
    /// Passes over the reconstruction batches.
    pub recon_epochs: u16,
    /// Cap on reconstruction steps across all epochs.
    pub recon_steps_max: Option<u16>,
    /// Passes over the post-reconstruction batches.
    pub post_epochs: u16,
    /// Cap on post-reconstruction steps across all epochs.
    pub post_steps_max: Option<u16>,
}

impl Default for SplitConfig {
    /// TFF's defaults: batch 1 is the API default, but every preset sets 5; one epoch, no caps,
    /// split on, no shuffle.
    fn default() -> Self {
        Self {
            batch_size: 5,
            max_examples: None,
            shuffle_seed: None,
            split_dataset: true,
            recon_epochs: 1,
            recon_steps_max: None,
            post_epochs: 1,
            post_steps_max: None,
        }
    }
}

impl SplitConfig {
    /// Rejects values that would make a phase meaningless.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig {
                what: "batch_size must be at least 1",
            });
        }
        if self.recon_epochs == 0 || self.post_epochs == 0 {
            return Err(Error::InvalidConfig {
                what: "epochs must be at least 1",
            });
        }
        if self.recon_steps_max == Some(0) || self.post_steps_max == Some(0) {
            return Err(Error::InvalidConfig {
                what: "steps_max must be at least 1 when set",
            });
        }
        Ok(())
    }

    /// Number of examples kept from a dataset of `len`.
    pub fn kept(&self, len: usize) -> usize {
        match self.max_examples {
            Some(m) => len.min(usize::from(m)),
            None => len,
        }
    }

    /// Fills `order[..kept]` with the example indices in batch order (identity, or shuffled).
    pub fn order(&self, len: usize, order: &mut [u16]) -> usize {
        let kept = self.kept(len).min(order.len());
        for (i, o) in order[..kept].iter_mut().enumerate() {
            *o = i as u16;
        }
        if let Some(seed) = self.shuffle_seed {
            DeviceRng::new(seed).shuffle(&mut order[..kept]);
        }
        kept
    }

    /// The batch schedule of `phase` for `kept` examples.
    pub fn schedule(&self, phase: Phase, kept: usize) -> Schedule {
        let batch = usize::from(self.batch_size.max(1));
        let batches = kept.div_ceil(batch);
        let (first, stride) = match (self.split_dataset, phase) {
            (true, Phase::Reconstruction) => (0, 2),
            (true, Phase::PostReconstruction) => (1, 2),
            (false, _) => (0, 1),
        };
        let per_epoch = if batches > first {
            (batches - first).div_ceil(stride)
        } else {
            0
        };
        let (epochs, cap) = match phase {
            Phase::Reconstruction => (self.recon_epochs, self.recon_steps_max),
            Phase::PostReconstruction => (self.post_epochs, self.post_steps_max),
        };
        let mut steps = per_epoch * usize::from(epochs);
        if let Some(cap) = cap {
            steps = steps.min(usize::from(cap));
        }
        Schedule {
            kept,
            batch,
            first,
            stride,
            per_epoch,
            steps,
            next: 0,
        }
    }
}

/// The sequence of batches one phase iterates; yields example-position ranges into the order
/// array produced by [`SplitConfig::order`].
#[derive(Debug, Clone)]
pub struct Schedule {
    kept: usize,
    batch: usize,
    first: usize,
    stride: usize,
    per_epoch: usize,
    steps: usize,
    next: usize,
}

impl Schedule {
    /// Total steps (batches) this phase runs.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Batch index (into the un-split batch list) of step `step`.
    pub fn batch_index(&self, step: usize) -> usize {
        self.first + self.stride * (step % self.per_epoch.max(1))
    }

    /// Number of example visits over the whole schedule (counting repeats).
    pub fn examples(&self) -> usize {
        self.clone().map(|r| r.len()).sum()
    }

    /// Distinct examples the phase visits (its first epoch's).
    pub fn distinct_examples(&self) -> usize {
        self.first_epoch().map(|r| r.len()).sum()
    }

    /// The steps of the first epoch (all steps when capped within it): every example the
    /// whole schedule visits, each exactly once.
    pub(crate) fn first_epoch(&self) -> core::iter::Take<Schedule> {
        let n = self.per_epoch.min(self.steps);
        self.clone().take(n)
    }

    /// Error if the phase has no step at all.
    pub fn require_nonempty(&self, phase: Phase) -> Result<()> {
        if self.steps == 0 {
            Err(Error::EmptySplit { phase })
        } else {
            Ok(())
        }
    }
}

impl Iterator for Schedule {
    type Item = core::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.steps {
            return None;
        }
        let b = self.batch_index(self.next);
        self.next += 1;
        let start = b * self.batch;
        Some(start..(start + self.batch).min(self.kept))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.steps - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Schedule {}
