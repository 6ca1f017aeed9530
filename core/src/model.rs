//! The matrix-factorization model and the hyperparameters of one round.

use crate::error::{Error, Result};
use crate::scalar::Scalar;
use crate::split::SplitConfig;
use serde::{Deserialize, Serialize};

/// Optional terms of the prediction `dot(u, v_i) [+ b_u] [+ b_i] [+ mu]`. All off by default,
/// as in TFF's tutorial model.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Default,
    Serialize,
    Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
pub struct ModelConfig {
    /// A local user bias `b_u`, reconstructed with the user embedding, never sent.
    pub user_bias: bool,
    /// A global item bias `b_i` per item, trained with the item rows and sent in the update.
    pub item_bias: bool,
    /// A fixed global offset `mu` (e.g. the training mean rating); `None` is no offset.
    pub global_mean: Option<f32>,
}

/// How a client's update is weighted in the server's mean (docs/SEMANTICS.md "One client's round" 5).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
// Names only matter to text formats (the simulator's config files); postcard uses the index.
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Weight = post-reconstruction examples iterated, counting repeats (TFF's default).
    #[default]
    Examples,
    /// Weight = 1 for every client that produced a finite update.
    Uniform,
}

/// How a round reconstructs the user embedding (and user bias) with the item rows frozen.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Default,
    Serialize,
    Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
pub enum Reconstruction {
    /// Minibatch SGD from a random start over the reconstruction schedule (TFF's, the default).
    #[default]
    Sgd,
    /// The exact minimiser of the reconstruction examples' mean squared error plus
    /// `user_l2 * |u|^2` (user bias unregularised): a ridge solve ([`crate::ridge`]). Each
    /// example of the phase counts once (epochs and step caps do not apply); needs
    /// `user_l2 > 0`, which makes the system positive definite.
    Exact,
    /// The exact solve with regularisers that also shrink by how little a user rated: over
    /// `n` reconstruction examples it minimises the mean squared error plus
    /// `(user_l2 + user_prior / n) |u|^2 + (bias_l2 + bias_prior / n) b_u^2` (a Gaussian
    /// prior of fixed strength on top of the per-example penalty, so a user with few ratings
    /// is pulled harder towards the population). With all three zero it is [`Self::Exact`]
    /// (a separate variant so that `Exact`'s wire encoding stays as it was).
    ExactPrior {
        /// Prior strength on `|u|^2`, divided by the user's example count.
        user_prior: f32,
        /// Per-example penalty on the user bias (0: unregularised, as in `Exact`).
        bias_l2: f32,
        /// Prior strength on the user bias, divided by the user's example count.
        bias_prior: f32,
    },
    /// [`Self::ExactPrior`] with a learned prior mean (SVD++-style implicit feedback): the
    /// embedding is pulled towards `c = m + n^(-1/2) * sum_j y_j` instead of zero, where
    /// the sum runs over the `n` reconstruction examples' items, `y_j` is item `j`'s
    /// implicit row and `m` a global mean row, both trained by the server like item rows.
    /// Which items a user rated thus informs its embedding before their ratings do. The
    /// global matrix holds `2 * items + 1` rows: item rows `0..items`, implicit rows
    /// `items + j`, and `m` at `2 * items` ([`crate::implicit`]).
    ExactImplicit {
        /// Prior strength on `|u - c|^2`, divided by the user's example count.
        user_prior: f32,
        /// Per-example penalty on the user bias.
        bias_l2: f32,
        /// Prior strength on the user bias, divided by the user's example count.
        bias_prior: f32,
        /// The catalogue size: ratings name items `0..items`.
        items: u32,
        /// Step of an implicit row relative to the mean row's, before the `n^(-1/2)` scale.
        implicit_lr: f32,
        /// Learn from both halves of a training round: after the usual pass, a second one
        /// reconstructs on the post-reconstruction half and trains the reconstruction half's
        /// rows (each example once, from where the first pass left them), so every rating
        /// trains the model while each reconstruction still sees only half (as evaluation's
        /// does). The update then holds every rated item's row and implicit row; its weight
        /// counts both passes' examples. Needs `split_dataset`.
        both_halves: bool,
    },
}

impl Reconstruction {
    /// Whether the user is solved for exactly (either exact variant).
    pub fn is_exact(&self) -> bool {
        !matches!(self, Self::Sgd)
    }
}

/// The exact solve's regularisers, in `f32` (converted to the ridge type by the solve).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ExactParams {
    pub user_l2: f32,
    pub user_prior: f32,
    pub bias_l2: f32,
    pub bias_prior: f32,
    /// The learned prior mean of [`Reconstruction::ExactImplicit`].
    pub implicit: ImplicitParams,
}

/// [`crate::implicit::Implicit`] stored without a niche: `items == 0` is "off" (a valid
/// configuration has `items > 0`) and the flag is a `u8`, so `Option<ExactParams>`'s `None`
/// stays all-zero bytes and a `static` device stays in `.bss` (a `bool` or an inner `Option`
/// would give the outer `None` a non-zero niche value, and the device an initialiser in
/// flash).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ImplicitParams {
    items: u32,
    lr: f32,
    both_halves: u8,
}

impl ImplicitParams {
    const OFF: Self = Self {
        items: 0,
        lr: 0.0,
        both_halves: 0,
    };

    fn on(imp: crate::implicit::Implicit) -> Self {
        Self {
            items: imp.items,
            lr: imp.lr,
            both_halves: u8::from(imp.both_halves),
        }
    }

    pub(crate) fn get(self) -> Option<crate::implicit::Implicit> {
        (self.items > 0).then_some(crate::implicit::Implicit {
            items: self.items,
            lr: self.lr,
            both_halves: self.both_halves != 0,
        })
    }
}

/// Every hyperparameter a device needs for one round (training or evaluation).
#[derive(
    Debug, Clone, Copy, PartialEq, Serialize, Deserialize, postcard::experimental::max_size::MaxSize,
)]
pub struct RoundConfig {
    /// The dataset pipeline.
    pub split: SplitConfig,
    /// SGD learning rate of reconstruction (user embedding and user bias).
    pub recon_lr: f32,
    /// SGD learning rate of post-reconstruction (item rows and item biases).
    pub post_lr: f32,
    /// L2 penalty `lambda * |u|^2` added to the reconstruction loss (0 = off, as in TFF).
    pub user_l2: f32,
    /// Half-width of the uniform initialisation of the user embedding (Keras `'uniform'`: 0.05).
    pub init_scale: f32,
    /// How the update is weighted.
    pub weighting: Weighting,
    /// An example is correct when `|y - y_hat| <= accuracy_threshold` (0.5 in docs/SEMANTICS.md).
    pub accuracy_threshold: f32,
    /// Optional bias terms.
    pub model: ModelConfig,
    /// SGD or the exact ridge solve.
    pub reconstruction: Reconstruction,
}

impl Default for RoundConfig {
    /// The tutorial's client: reconstruction SGD 0.1, client SGD 0.5, batch 5, split halves.
    fn default() -> Self {
        Self {
            split: SplitConfig::default(),
            recon_lr: 0.1,
            post_lr: 0.5,
            user_l2: 0.0,
            init_scale: 0.05,
            weighting: Weighting::Examples,
            accuracy_threshold: 0.5,
            model: ModelConfig::default(),
            reconstruction: Reconstruction::Sgd,
        }
    }
}

impl RoundConfig {
    /// Examples a training round's post-reconstruction phase iterates for a client that keeps
    /// `kept` examples (repeats counted; with `both_halves`, plus each reconstruction example
    /// once for the exchanged pass): what its metrics count, and the most the server lets a
    /// client claim.
    pub fn trained_examples(&self, kept: usize) -> usize {
        let post = self
            .split
            .schedule(crate::error::Phase::PostReconstruction, kept)
            .examples();
        match self.reconstruction {
            Reconstruction::ExactImplicit {
                both_halves: true, ..
            } => {
                post + self
                    .split
                    .schedule(crate::error::Phase::Reconstruction, kept)
                    .distinct_examples()
            }
            _ => post,
        }
    }

    /// The aggregation weight of a training round for a client that keeps `kept` examples
    /// (docs/SEMANTICS.md "One client's round" 5): its trained examples, or 1 with uniform
    /// weighting (before a non-finite update zeroes it).
    pub fn weight(&self, kept: usize) -> u32 {
        match self.weighting {
            Weighting::Examples => u32::try_from(self.trained_examples(kept)).unwrap_or(u32::MAX),
            Weighting::Uniform => 1,
        }
    }

    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<()> {
        self.split.validate()?;
        let finite_nonneg = [
            (self.recon_lr, "recon_lr must be finite and >= 0"),
            (self.post_lr, "post_lr must be finite and >= 0"),
            (self.user_l2, "user_l2 must be finite and >= 0"),
            (self.init_scale, "init_scale must be finite and >= 0"),
            (
                self.accuracy_threshold,
                "accuracy_threshold must be finite and >= 0",
            ),
        ];
        if let Some(&(_, what)) = finite_nonneg
            .iter()
            .find(|(x, _)| !(x.is_finite() && *x >= 0.0))
        {
            return Err(Error::InvalidConfig { what });
        }
        let priors = match self.reconstruction {
            Reconstruction::ExactPrior {
                user_prior,
                bias_l2,
                bias_prior,
            } => [user_prior, bias_l2, bias_prior, 0.0],
            Reconstruction::ExactImplicit {
                user_prior,
                bias_l2,
                bias_prior,
                implicit_lr,
                ..
            } => [user_prior, bias_l2, bias_prior, implicit_lr],
            _ => [0.0; 4],
        };
        if !priors.iter().all(|x| x.is_finite() && *x >= 0.0) {
            return Err(Error::InvalidConfig {
                what: "user_prior, bias_l2, bias_prior and implicit_lr must be finite and >= 0",
            });
        }
        if matches!(
            self.reconstruction,
            Reconstruction::ExactImplicit {
                both_halves: true,
                ..
            }
        ) && !self.split.split_dataset
        {
            return Err(Error::InvalidConfig {
                what: "both_halves needs split_dataset (else the halves are the same)",
            });
        }
        if matches!(self.reconstruction, Reconstruction::ExactImplicit { items, .. } if items == 0 || items > crate::implicit::MAX_ITEMS)
        {
            return Err(Error::InvalidConfig {
                what: "implicit feedback needs 0 < items <= (u32::MAX - 1) / 2",
            });
        }
        if self.reconstruction.is_exact() && self.user_l2 <= 0.0 {
            return Err(Error::InvalidConfig {
                what: "exact reconstruction needs user_l2 > 0 (the regulariser keeps its system solvable)",
            });
        }
        if matches!(self.model.global_mean, Some(m) if !m.is_finite()) {
            return Err(Error::InvalidConfig {
                what: "global_mean must be finite",
            });
        }
        Ok(())
    }
}

/// The round's constants converted to the device scalar once, outside the example loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params<S> {
    pub two_recon_lr: S,
    pub two_post_lr: S,
    pub l2_step: Option<S>,
    pub threshold: S,
    pub user_bias: bool,
    pub item_bias: bool,
    pub mu: Option<S>,
    /// The regularisers of exact reconstruction; `None` for SGD.
    pub exact: Option<ExactParams>,
}

impl<S: Scalar> Params<S> {
    /// All terms zero or off: all-zero bytes, so a `static` device that holds one stays in
    /// `.bss` instead of costing flash for an initialiser.
    pub(crate) const fn zero() -> Self {
        Self {
            two_recon_lr: S::ZERO,
            two_post_lr: S::ZERO,
            l2_step: None,
            threshold: S::ZERO,
            user_bias: false,
            item_bias: false,
            mu: None,
            exact: None,
        }
    }

    pub(crate) fn new(cfg: &RoundConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            two_recon_lr: S::from_f32(2.0 * cfg.recon_lr),
            two_post_lr: S::from_f32(2.0 * cfg.post_lr),
            l2_step: (cfg.user_l2 > 0.0).then(|| S::from_f32(2.0 * cfg.user_l2 * cfg.recon_lr)),
            threshold: S::from_f32(cfg.accuracy_threshold),
            user_bias: cfg.model.user_bias,
            item_bias: cfg.model.item_bias,
            mu: cfg.model.global_mean.map(S::from_f32),
            exact: match cfg.reconstruction {
                Reconstruction::Sgd => None,
                Reconstruction::Exact => Some(ExactParams {
                    user_l2: cfg.user_l2,
                    user_prior: 0.0,
                    bias_l2: 0.0,
                    bias_prior: 0.0,
                    implicit: ImplicitParams::OFF,
                }),
                Reconstruction::ExactPrior {
                    user_prior,
                    bias_l2,
                    bias_prior,
                } => Some(ExactParams {
                    user_l2: cfg.user_l2,
                    user_prior,
                    bias_l2,
                    bias_prior,
                    implicit: ImplicitParams::OFF,
                }),
                Reconstruction::ExactImplicit {
                    user_prior,
                    bias_l2,
                    bias_prior,
                    items,
                    implicit_lr,
                    both_halves,
                } => Some(ExactParams {
                    user_l2: cfg.user_l2,
                    user_prior,
                    bias_l2,
                    bias_prior,
                    implicit: ImplicitParams::on(crate::implicit::Implicit {
                        items,
                        lr: implicit_lr,
                        both_halves,
                    }),
                }),
            },
        })
    }

    /// The learned prior mean's terms, when the round has them.
    pub(crate) fn implicit(&self) -> Option<crate::implicit::Implicit> {
        self.exact.and_then(|e| e.implicit.get())
    }

    /// The item ids ratings may name and ranking visits: `0..catalogue`, which excludes the
    /// implicit rows when the model has them.
    pub(crate) fn catalogue<V: crate::rows::ItemRows<S, K>, const K: usize>(
        &self,
        rows: &V,
    ) -> u32 {
        self.implicit().map_or(rows.num_items(), |imp| imp.items)
    }

    /// `dot(u, v) [+ b_u] [+ b_i] [+ mu]`, terms added in that order.
    #[inline]
    pub(crate) fn predict(&self, user: &[S], user_bias: S, row: &[S], item_bias: S) -> S {
        let mut p = S::dot(user, row);
        if self.user_bias {
            p = p + user_bias;
        }
        if self.item_bias {
            p = p + item_bias;
        }
        if let Some(mu) = self.mu {
            p = p + mu;
        }
        p
    }
}

/// A client's metric sums; the server adds them across clients and then finalises.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Default,
    Serialize,
    Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
pub struct Metrics {
    /// Sum over examples of the squared error (example-weighted MSE numerator).
    pub loss_sum: f32,
    /// Sum over examples of the absolute error (for MAE).
    pub abs_err_sum: f32,
    /// Examples with `|y - y_hat| <= threshold`.
    pub correct: u32,
    /// Examples seen.
    pub count: u32,
}

impl Metrics {
    /// Adds one example with error `err = y_hat - y`. Sums are kept in f32 whatever the device
    /// scalar, so a narrow fixed-point type cannot saturate a squared error.
    #[inline]
    pub fn record(&mut self, err: f32, correct: bool) {
        self.loss_sum += err * err;
        self.abs_err_sum += libm::fabsf(err);
        self.correct += u32::from(correct);
        self.count += 1;
    }
    /// Adds another client's sums.
    pub fn merge(&mut self, other: &Metrics) {
        self.loss_sum += other.loss_sum;
        self.abs_err_sum += other.abs_err_sum;
        self.correct += other.correct;
        self.count += other.count;
    }
    /// Example-weighted mean squared error (0 when empty).
    pub fn loss(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f32
        }
    }
    /// Fraction of examples within the accuracy threshold.
    pub fn accuracy(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f32 / self.count as f32
        }
    }
}
