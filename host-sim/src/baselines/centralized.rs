//! `fedrecon centralized`: the centralized matrix-factorization baseline, the upper bound
//! beside every federated figure.
//!
//! Same model (`dot(u, v_i) [+ b_u] [+ b_i] [+ mu]`, K from the configuration), same split
//! (the training users' ratings as the partition keeps them, nothing of the validation or test
//! users), but trained centrally: one user embedding (and bias) per training user, minibatch
//! SGD or Adam over all training ratings. The trained item rows (and item biases) are then
//! handed to the simulator's own evaluation ([`Simulation::evaluate`]): every held-out user
//! reconstructs with `core`'s [`fedrecon_core::Device::evaluate`] under the configuration's
//! evaluation settings, so the figures are measured exactly as the federated ones.
//!
//! Objective of a batch `B` of ratings `(a, i, y)`, with `e = y_hat - y`:
//! `L = (1/|B|) Σ_B [ e² + λ_u |u_a|² + λ_v |v_i|² ]` (biases unregularised), so the
//! gradient is `∂L/∂u_a = (2/|B|) Σ_{B, user a} (e v_i + λ_u u_a)`,
//! `∂L/∂v_i = (2/|B|) Σ_{B, item i} (e u_a + λ_v v_i)`, `∂L/∂b_u = (2/|B|) Σ e` and
//! `∂L/∂b_i = (2/|B|) Σ e` over that user's / item's ratings. `mu` is the training mean rating
//! (as the federated model uses) and is not trained.

use std::time::Instant;

use anyhow::{Result, ensure};
use fedrecon_core::rng::DeviceRng;
use serde::Serialize;

use crate::config::{Config, Scalar};
use crate::data::partition::{ClientSet, Partition};
use crate::dispatch_k;
use crate::output::bundle::ModelBundle;
use crate::output::checkpoint;
use crate::round::evaluate::EvalReport;
use crate::round::{Simulation, Split, mean_rating};
use crate::seeds::derive;

/// The optimizer of the centralized baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CentralOptimizer {
    /// Minibatch SGD: `θ ← θ − lr · ∇L`.
    Sgd,
    /// Adam (β1 0.9, β2 0.999, ε 1e-8, bias-corrected), dense over all parameters.
    Adam,
}

impl std::str::FromStr for CentralOptimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            _ => Err(format!("unknown optimizer '{s}' (expected sgd or adam)")),
        }
    }
}

/// Hyperparameters of the centralized training (the model comes from the [`Config`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CentralConfig {
    /// Passes over all training ratings.
    pub epochs: u32,
    /// Ratings per minibatch.
    pub batch_size: usize,
    /// Optimizer.
    pub optimizer: CentralOptimizer,
    /// Learning rate.
    pub lr: f32,
    /// L2 coefficient λ_u on the user embeddings (per rating, see the module docs).
    pub user_l2: f32,
    /// L2 coefficient λ_v on the item rows (per rating).
    pub item_l2: f32,
    /// Seed of the initialisation and the shuffles.
    pub seed: u64,
}

impl Default for CentralConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 256,
            optimizer: CentralOptimizer::Adam,
            lr: 0.002,
            user_l2: 0.05,
            item_l2: 0.05,
            seed: 1,
        }
    }
}

/// All training ratings as `(user index, item, rating)` triples; the user index is the
/// position in the training [`ClientSet`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Triples {
    /// User index of each rating.
    pub users: Vec<u32>,
    /// Item of each rating.
    pub items: Vec<u32>,
    /// The rating.
    pub ratings: Vec<f32>,
}

impl Triples {
    /// Every rating of `set`.
    pub fn from_set(set: &ClientSet) -> Self {
        let mut t = Triples::default();
        for (u, c) in set.iter().enumerate() {
            t.users.extend(std::iter::repeat_n(u as u32, c.len()));
            t.items.extend_from_slice(c.items);
            t.ratings.extend_from_slice(c.ratings);
        }
        t
    }

    /// Number of ratings.
    pub fn len(&self) -> usize {
        self.ratings.len()
    }

    /// Whether there is no rating.
    pub fn is_empty(&self) -> bool {
        self.ratings.is_empty()
    }
}

/// The shape of the centralized model and where each block sits in its flat parameter vector:
/// item rows (`items × k`), item biases (`items`, with item biases), user rows (`users × k`),
/// user biases (`users`, with user biases). The leading item block is the simulator's layout,
/// so `&params[..model.global_len()]` is what [`Simulation::set_params`] takes.
#[derive(Clone, Debug, PartialEq)]
pub struct CentralModel {
    /// Embedding width.
    pub k: usize,
    /// Catalogue size.
    pub items: usize,
    /// Training users.
    pub users: usize,
    /// Per-user bias term.
    pub user_bias: bool,
    /// Per-item bias term.
    pub item_bias: bool,
    /// Fixed global offset.
    pub mu: Option<f32>,
}

impl CentralModel {
    fn item_bias_at(&self) -> usize {
        self.items * self.k
    }
    fn users_at(&self) -> usize {
        self.item_bias_at() + if self.item_bias { self.items } else { 0 }
    }
    fn user_bias_at(&self) -> usize {
        self.users_at() + self.users * self.k
    }

    /// Length of the global (item) part of the parameters.
    pub fn global_len(&self) -> usize {
        self.users_at()
    }

    /// Length of the whole parameter vector.
    pub fn param_len(&self) -> usize {
        self.user_bias_at() + if self.user_bias { self.users } else { 0 }
    }

    /// Keras-`'uniform'` initialisation as the federated model: rows U(-0.05, 0.05), biases 0.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut p = vec![0.0f32; self.param_len()];
        let mut rng = DeviceRng::new(derive(&[seed, 0xCE_u64]));
        let (items, users) = (self.items * self.k, self.users * self.k);
        let at = self.users_at();
        let (head, tail) = p.split_at_mut(at);
        for x in head[..items].iter_mut().chain(&mut tail[..users]) {
            *x = -0.05 + 0.1 * rng.unit_f32();
        }
        p
    }

    /// The prediction for user index `a` and item `i`.
    pub fn predict(&self, p: &[f32], a: usize, i: usize) -> f32 {
        let k = self.k;
        let u = &p[self.users_at() + a * k..][..k];
        let v = &p[i * k..][..k];
        let mut y: f32 = u.iter().zip(v).map(|(x, y)| x * y).sum();
        if self.user_bias {
            y += p[self.user_bias_at() + a];
        }
        if self.item_bias {
            y += p[self.item_bias_at() + i];
        }
        if let Some(mu) = self.mu {
            y += mu;
        }
        y
    }

    /// The objective of the module docs over the ratings `batch` (indices into `data`).
    pub fn batch_loss(
        &self,
        p: &[f32],
        data: &Triples,
        batch: &[usize],
        cfg: &CentralConfig,
    ) -> f64 {
        let k = self.k;
        let sq = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        let mut total = 0.0f64;
        for &j in batch {
            let (a, i) = (data.users[j] as usize, data.items[j] as usize);
            let e = f64::from(self.predict(p, a, i)) - f64::from(data.ratings[j]);
            total += e * e
                + f64::from(cfg.user_l2) * sq(&p[self.users_at() + a * k..][..k])
                + f64::from(cfg.item_l2) * sq(&p[i * k..][..k]);
        }
        total / batch.len().max(1) as f64
    }

    /// Adds the gradient of [`Self::batch_loss`] to `grad` (same layout as the parameters) and
    /// returns the batch's summed squared error (without the penalties).
    pub fn add_batch_grad(
        &self,
        p: &[f32],
        data: &Triples,
        batch: &[usize],
        cfg: &CentralConfig,
        grad: &mut [f32],
    ) -> f64 {
        let k = self.k;
        let c = 2.0 / batch.len().max(1) as f32;
        let mut sse = 0.0f64;
        for &j in batch {
            let (a, i) = (data.users[j] as usize, data.items[j] as usize);
            let e = self.predict(p, a, i) - data.ratings[j];
            sse += f64::from(e) * f64::from(e);
            let (ua, vi) = (self.users_at() + a * k, i * k);
            for d in 0..k {
                let (u, v) = (p[ua + d], p[vi + d]);
                grad[ua + d] += c * (e * v + cfg.user_l2 * u);
                grad[vi + d] += c * (e * u + cfg.item_l2 * v);
            }
            if self.user_bias {
                grad[self.user_bias_at() + a] += c * e;
            }
            if self.item_bias {
                grad[self.item_bias_at() + i] += c * e;
            }
        }
        sse
    }
}

/// Trains the centralized model on `data`; calls `on_epoch(epoch, train_rmse, params)` after
/// every epoch (train RMSE of the epoch's forward passes). Returns the parameters.
pub fn train(
    model: &CentralModel,
    data: &Triples,
    cfg: &CentralConfig,
    mut on_epoch: impl FnMut(u32, f64, &[f32]) -> Result<()>,
) -> Result<Vec<f32>> {
    ensure!(!data.is_empty(), "no training ratings");
    ensure!(cfg.batch_size > 0, "batch size must be at least 1");
    let mut p = model.init(cfg.seed);
    let n = p.len();
    let mut grad = vec![0.0f32; n];
    let (mut m, mut v) = match cfg.optimizer {
        CentralOptimizer::Adam => (vec![0.0f32; n], vec![0.0f32; n]),
        CentralOptimizer::Sgd => (Vec::new(), Vec::new()),
    };
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut t = 0i32;
    let mut order: Vec<usize> = (0..data.len()).collect();
    for epoch in 1..=cfg.epochs {
        DeviceRng::new(derive(&[cfg.seed, 0xE9, u64::from(epoch)])).shuffle(&mut order);
        let mut sse = 0.0f64;
        for batch in order.chunks(cfg.batch_size) {
            grad.fill(0.0);
            sse += model.add_batch_grad(&p, data, batch, cfg, &mut grad);
            match cfg.optimizer {
                CentralOptimizer::Sgd => {
                    for (x, g) in p.iter_mut().zip(&grad) {
                        *x -= cfg.lr * g;
                    }
                }
                CentralOptimizer::Adam => {
                    t += 1;
                    let lr_t = cfg.lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
                    for i in 0..n {
                        let g = grad[i];
                        m[i] = b1 * m[i] + (1.0 - b1) * g;
                        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                        p[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
                    }
                }
            }
        }
        let rmse = (sse / data.len() as f64).sqrt();
        ensure!(rmse.is_finite(), "epoch {epoch}: training diverged");
        on_epoch(epoch, rmse, &p)?;
    }
    Ok(p)
}

/// The shared part of a trained centralized model: what `fedrecon recommend` needs (the
/// per-user rows stay behind, as a device's would).
#[derive(Clone, Debug, PartialEq)]
pub struct CentralFit {
    /// The configuration the model was trained and evaluated under.
    pub config: Config,
    /// Item rows, row-major `items × k` (dense item ids).
    pub items: Vec<f32>,
    /// Item biases (empty without item biases).
    pub item_biases: Vec<f32>,
    /// The global-mean term, when the model has one.
    pub global_mean: Option<f32>,
    /// Digest of the training data (the partition's, as `train` records it).
    pub data_digest: u64,
}

impl CentralFit {
    /// The fit of `model`'s parameters `p`.
    pub(crate) fn new(config: &Config, model: &CentralModel, p: &[f32], data_digest: u64) -> Self {
        let rows = model.items * model.k;
        CentralFit {
            config: config.clone(),
            items: p[..rows].to_vec(),
            item_biases: p[rows..model.global_len()].to_vec(),
            global_mean: model.mu,
            data_digest,
        }
    }

    /// The model bundle `train` writes (`model.npz`), with the data's raw movie ids
    /// (`item_ids[i]` is dense item `i`). `rounds` is 0: no federated round trained it.
    pub fn bundle(&self, item_ids: &[u32]) -> Result<ModelBundle> {
        let k = self.config.model.k;
        ensure!(
            item_ids.len() * k == self.items.len(),
            "{} movie ids for a model of {} item rows",
            item_ids.len(),
            self.items.len() / k.max(1)
        );
        // No implicit rows: the bundle's configuration says so, so `recommend` solves as the
        // evaluation did.
        let mut config = self.config.clone();
        config.client.implicit = false;
        config.client.both_halves = false;
        Ok(ModelBundle {
            config_toml: config.to_toml_string(),
            k,
            items: self.items.clone(),
            item_biases: if self.item_biases.is_empty() {
                vec![0.0; item_ids.len()]
            } else {
                self.item_biases.clone()
            },
            global_mean: self.global_mean.unwrap_or(0.0),
            item_ids: item_ids.to_vec(),
            data_digest: self.data_digest,
            rounds: 0,
            implicit: Vec::new(),
        })
    }
}

/// What a centralized run produced.
#[derive(Clone, Debug)]
pub struct CentralResult {
    /// Train RMSE of each epoch.
    pub train_rmse: Vec<f64>,
    /// Validation evaluations (every `eval_every` epochs and at the end).
    pub val: Vec<EvalReport>,
    /// The final test evaluation (same users, seeds and reconstruction as `train`'s).
    pub test: EvalReport,
    /// The trained item rows and biases.
    pub fit: CentralFit,
    /// Wall-clock seconds (after data loading).
    pub seconds: f64,
}

/// Trains centrally on `part.train` and evaluates like the simulator (`cfg`'s evaluation
/// reconstruction, `run.eval_clients`, `run.seed`). `eval_every` = 0 validates at the end only.
pub fn run_partition(
    cfg: &Config,
    central: &CentralConfig,
    part: &Partition,
    num_items: usize,
    eval_every: u32,
) -> Result<CentralResult> {
    dispatch_k!(
        cfg.model.k,
        run_k(cfg, central, part, num_items, eval_every)
    )
}

fn run_k<const K: usize>(
    cfg: &Config,
    central: &CentralConfig,
    part: &Partition,
    num_items: usize,
    eval_every: u32,
) -> Result<CentralResult> {
    let t0 = Instant::now();
    let mut cfg = cfg.clone();
    cfg.run.scalar = Scalar::F32;
    if cfg.client.implicit {
        // The centralized model keeps one embedding per training user and has no implicit
        // rows to learn: it is evaluated with the configuration's solve around a zero prior
        // mean (the same solve without implicit feedback).
        tracing::info!(
            "centralized: biased MF has no implicit rows; evaluating without client.implicit"
        );
        cfg.client.implicit = false;
        cfg.client.both_halves = false;
    }
    let data = Triples::from_set(&part.train);
    let model = CentralModel {
        k: K,
        items: num_items,
        users: part.train.len(),
        user_bias: cfg.model.user_bias,
        item_bias: cfg.model.item_bias,
        mu: cfg.model.global_mean.then(|| mean_rating(&part.train)),
    };
    let mut sim = Simulation::<f32, K>::new(&cfg, part, num_items)?;
    let (mut train_rmse, mut val) = (Vec::new(), Vec::new());
    let p = train(&model, &data, central, |epoch, rmse, p| {
        train_rmse.push(rmse);
        if eval_every > 0 && epoch % eval_every == 0 && epoch != central.epochs {
            sim.set_params(&p[..model.global_len()])?;
            let e = sim.evaluate(Split::Val)?;
            tracing::info!(
                epoch,
                train_rmse = rmse,
                val_rmse = e.rmse,
                val_accuracy = e.rating_accuracy,
                "centralized"
            );
            val.push(e);
        } else {
            tracing::info!(epoch, train_rmse = rmse, "centralized");
        }
        Ok(())
    })?;
    sim.set_params(&p[..model.global_len()])?;
    val.push(sim.evaluate(Split::Val)?);
    let test = sim.evaluate(Split::Test)?;
    Ok(CentralResult {
        train_rmse,
        val,
        test,
        fit: CentralFit::new(&cfg, &model, &p, checkpoint::data_digest(part, num_items)),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_case(user_bias: bool, item_bias: bool) -> (CentralModel, Triples, CentralConfig) {
        let model = CentralModel {
            k: 3,
            items: 4,
            users: 3,
            user_bias,
            item_bias,
            mu: Some(3.5),
        };
        let data = Triples {
            users: vec![0, 0, 1, 2, 2, 2, 1],
            items: vec![0, 3, 1, 0, 2, 3, 3],
            ratings: vec![5.0, 1.0, 3.0, 4.0, 2.0, 5.0, 4.0],
        };
        let cfg = CentralConfig {
            user_l2: 0.3,
            item_l2: 0.2,
            ..CentralConfig::default()
        };
        (model, data, cfg)
    }

    /// The analytic gradient of the batch objective against central finite differences, for
    /// every parameter, with and without biases; entries a batch does not touch are zero.
    #[test]
    fn gradient_matches_finite_differences() {
        for (ub, ib) in [(false, false), (true, true), (true, false)] {
            let (model, data, cfg) = small_case(ub, ib);
            // Larger values than the init so the products matter.
            let mut p = model.init(9);
            for (j, x) in p.iter_mut().enumerate() {
                *x = *x * 10.0 + 0.1 * ((j % 7) as f32 - 3.0);
            }
            let batch = [0usize, 2, 3, 5, 6, 1];
            let mut grad = vec![0.0f32; p.len()];
            model.add_batch_grad(&p, &data, &batch, &cfg, &mut grad);
            for j in 0..p.len() {
                let h = 1e-2f32;
                let (mut plus, mut minus) = (p.clone(), p.clone());
                plus[j] += h;
                minus[j] -= h;
                let step = f64::from(plus[j]) - f64::from(minus[j]);
                let fd = (model.batch_loss(&plus, &data, &batch, &cfg)
                    - model.batch_loss(&minus, &data, &batch, &cfg))
                    / step;
                let g = f64::from(grad[j]);
                assert!(
                    (g - fd).abs() <= 1e-3 * (1.0 + fd.abs()),
                    "biases ({ub}, {ib}), parameter {j}: analytic {g}, finite difference {fd}"
                );
            }
            let partial = [4usize];
            let mut g = vec![0.0f32; p.len()];
            model.add_batch_grad(&p, &data, &partial, &cfg, &mut g);
            let k = model.k;
            assert!(
                g[..k].iter().all(|&x| x == 0.0),
                "item 0 is not in the batch"
            );
        }
    }

    /// Both optimizers lower the training error on a small synthetic low-rank problem.
    #[test]
    fn training_lowers_the_loss() {
        let (users, items, k) = (30usize, 20usize, 3usize);
        let mut data = Triples::default();
        let f = |a: usize, d: usize| ((a * 7 + d * 3) % 5) as f32 / 5.0;
        for a in 0..users {
            for i in (0..items).filter(|i| (i + a) % 3 != 0) {
                let y: f32 = (0..k).map(|d| f(a, d) * f(i + 11, d)).sum::<f32>() * 2.0 + 2.0;
                data.users.push(a as u32);
                data.items.push(i as u32);
                data.ratings.push(y);
            }
        }
        let model = CentralModel {
            k: 8,
            items,
            users,
            user_bias: true,
            item_bias: true,
            mu: Some(3.0),
        };
        for (optimizer, lr) in [(CentralOptimizer::Adam, 0.02), (CentralOptimizer::Sgd, 0.5)] {
            let cfg = CentralConfig {
                epochs: 60,
                batch_size: 16,
                optimizer,
                lr,
                user_l2: 0.001,
                item_l2: 0.001,
                seed: 3,
            };
            let mut rmse = Vec::new();
            train(&model, &data, &cfg, |_, r, _| {
                rmse.push(r);
                Ok(())
            })
            .unwrap();
            assert!(
                rmse.last().unwrap() < &(0.5 * rmse[0]),
                "{optimizer:?}: train RMSE {rmse:?}"
            );
        }
    }
}
