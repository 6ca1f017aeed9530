//! The server: weighted-mean aggregation of decoded sparse client updates and the server
//! optimizers (docs/SEMANTICS.md "Server").
//!
//! Parameters are handled as one flat `f32` vector: the item matrix row-major (`items × K`),
//! followed by one bias per item when the model has item biases. The aggregate is accumulated
//! in `f64` per touched row, in client order, so it is independent of thread count.

pub mod privacy;
pub mod robust;
pub(crate) mod strategy;
pub mod validate;

use anyhow::{Result, ensure};
use fedrecon_core::Metrics;
use rayon::prelude::*;

use crate::config::ServerConfig;

/// One client's decoded update, as the aggregator consumes it.
#[derive(Clone, Copy, Debug)]
pub struct ClientRows<'a> {
    /// Aggregation weight.
    pub weight: u32,
    /// Item ids, strictly ascending (the wire decoder enforces it).
    pub items: &'a [u32],
    /// Row deltas, `items.len() × K` row-major.
    pub rows: &'a [f32],
    /// Item-bias deltas parallel to `items` (empty without item biases).
    pub biases: &'a [f32],
}

/// Sums `w_c · delta_c` over a round's clients in `f64`.
///
/// Every row's sum is accumulated in client order, whether rows are added one by one
/// ([`Self::add_row`]) or by [`Self::add_clients`], which splits the item range into stripes
/// summed in parallel (each stripe still visits the clients in order), so both give the same
/// bits for any thread count.
#[derive(Clone, Debug)]
pub struct Aggregator {
    items: usize,
    k: usize,
    with_bias: bool,
    acc: Vec<f64>,
    acc_bias: Vec<f64>,
    touched: Vec<bool>,
    weight_sum: f64,
    clients: usize,
    metrics: Metrics,
}

impl Aggregator {
    /// An empty aggregate for `items` rows of width `k` (plus a bias per row when `with_bias`).
    pub fn new(items: usize, k: usize, with_bias: bool) -> Self {
        Self {
            items,
            k,
            with_bias,
            acc: vec![0.0; items * k],
            acc_bias: vec![0.0; items],
            touched: vec![false; items],
            weight_sum: 0.0,
            clients: 0,
            metrics: Metrics::default(),
        }
    }

    /// Clears the aggregate for the next round.
    pub fn reset(&mut self) {
        self.acc.fill(0.0);
        self.acc_bias.fill(0.0);
        self.touched.fill(false);
        self.weight_sum = 0.0;
        self.clients = 0;
        self.metrics = Metrics::default();
    }

    /// Adds one row of a client whose weight is `weight`: `acc[item] += weight · delta`.
    pub fn add_row(
        &mut self,
        item: u32,
        weight: u32,
        delta: &[f32],
        bias: Option<f32>,
    ) -> Result<()> {
        let i = item as usize;
        ensure!(
            i < self.items,
            "update row {item} is out of range ({} items)",
            self.items
        );
        ensure!(
            delta.len() == self.k,
            "update row has width {}, expected {}",
            delta.len(),
            self.k
        );
        if weight == 0 {
            return Ok(());
        }
        self.touched[i] = true;
        let w = f64::from(weight);
        for (a, &d) in self.acc[i * self.k..(i + 1) * self.k].iter_mut().zip(delta) {
            *a += w * f64::from(d);
        }
        if let (true, Some(b)) = (self.with_bias, bias) {
            self.acc_bias[i] += w * f64::from(b);
        }
        Ok(())
    }

    /// Adds the rows of several clients (in the given order) and records each client's weight
    /// and metrics, summing disjoint item stripes in parallel on the current rayon pool.
    /// The result is bit-identical to adding the same rows one by one in order.
    pub fn add_clients(&mut self, clients: &[(ClientRows<'_>, Metrics)]) -> Result<()> {
        self.add_clients_scaled(clients, |_| 1.0)
    }

    /// [`Self::add_clients`] with client `c`'s rows multiplied by `scale(c)` (a norm bound):
    /// `acc += w · (scale · delta)` in `f64`, so a scale of 1 gives `add_clients`' bits.
    pub(crate) fn add_clients_scaled(
        &mut self,
        clients: &[(ClientRows<'_>, Metrics)],
        scale: impl Fn(usize) -> f64 + Sync,
    ) -> Result<()> {
        let rows: Vec<ClientRows<'_>> = clients.iter().map(|(c, _)| *c).collect();
        self.add_rows_scaled(&rows, scale)?;
        for (c, m) in clients {
            self.add_client(c.weight, m);
        }
        Ok(())
    }

    /// The rows of [`Self::add_clients_scaled`] without recording the clients: a shard
    /// owner of a cluster sums the rows of its item range, rank 0 records every client.
    pub(crate) fn add_rows_scaled(
        &mut self,
        clients: &[ClientRows<'_>],
        scale: impl Fn(usize) -> f64 + Sync,
    ) -> Result<()> {
        let (k, n) = (self.k, self.items);
        for c in clients {
            ensure!(
                c.rows.len() == c.items.len() * k,
                "update rows have the wrong length"
            );
            ensure!(
                c.biases.is_empty() || c.biases.len() == c.items.len(),
                "update biases have the wrong length"
            );
            ensure!(
                c.items.windows(2).all(|w| w[0] < w[1]),
                "update item ids are not strictly ascending"
            );
            if let Some(&last) = c.items.last() {
                ensure!(
                    (last as usize) < n,
                    "update row {last} is out of range ({n} items)"
                );
            }
        }
        let stripe = n.div_ceil(4 * rayon::current_num_threads()).max(64);
        let with_bias = self.with_bias;
        self.acc
            .par_chunks_mut(stripe * k)
            .zip(self.acc_bias.par_chunks_mut(stripe))
            .zip(self.touched.par_chunks_mut(stripe))
            .enumerate()
            .for_each(|(s, ((acc, acc_bias), touched))| {
                let lo = (s * stripe) as u32;
                let hi = lo + touched.len() as u32;
                for (ci, c) in clients.iter().enumerate() {
                    if c.weight == 0 {
                        continue;
                    }
                    let (w, s) = (f64::from(c.weight), scale(ci));
                    let a = c.items.partition_point(|&i| i < lo);
                    let b = c.items.partition_point(|&i| i < hi);
                    for r in a..b {
                        let i = (c.items[r] - lo) as usize;
                        touched[i] = true;
                        let row = &c.rows[r * k..(r + 1) * k];
                        for (acc, &d) in acc[i * k..(i + 1) * k].iter_mut().zip(row) {
                            *acc += w * (s * f64::from(d));
                        }
                        if with_bias && !c.biases.is_empty() {
                            acc_bias[i] += w * (s * f64::from(c.biases[r]));
                        }
                    }
                }
            });
        Ok(())
    }

    /// The sums of the items `i` with `i mod shards == shard` (per item: its row sums, its
    /// bias sum, whether touched) as little-endian bytes: a shard owner's part of the
    /// aggregate, for rank 0.
    pub(crate) fn shard_bytes(&self, shard: usize, shards: usize) -> Vec<u8> {
        let k = self.k;
        let mut out = Vec::new();
        for i in (shard..self.items).step_by(shards.max(1)) {
            for a in &self.acc[i * k..(i + 1) * k] {
                out.extend_from_slice(&a.to_le_bytes());
            }
            out.extend_from_slice(&self.acc_bias[i].to_le_bytes());
            out.push(u8::from(self.touched[i]));
        }
        out
    }

    /// Puts a shard owner's [`Self::shard_bytes`] into this aggregate.
    pub(crate) fn set_shard(&mut self, shard: usize, shards: usize, bytes: &[u8]) -> Result<()> {
        let k = self.k;
        let per_item = 8 * k + 9;
        let items = (shard..self.items).step_by(shards.max(1));
        ensure!(
            bytes.len() == items.len() * per_item,
            "shard {shard} of {shards} is {} bytes, expected {}",
            bytes.len(),
            items.len() * per_item
        );
        let f = |b: &[u8]| f64::from_le_bytes(b.try_into().expect("8 bytes"));
        for (i, b) in items.zip(bytes.chunks_exact(per_item)) {
            for (a, v) in self.acc[i * k..(i + 1) * k]
                .iter_mut()
                .zip(b.chunks_exact(8))
            {
                *a = f(v);
            }
            self.acc_bias[i] = f(&b[8 * k..8 * k + 8]);
            self.touched[i] = b[8 * k + 8] != 0;
        }
        Ok(())
    }

    /// Records one client's weight and metric sums (call once per client, after its rows).
    pub fn add_client(&mut self, weight: u32, metrics: &Metrics) {
        self.weight_sum += f64::from(weight);
        self.clients += 1;
        self.metrics.merge(metrics);
    }

    /// Sum of the clients' weights.
    pub fn weight_sum(&self) -> f64 {
        self.weight_sum
    }

    /// Clients added since the last reset.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// The summed training metrics of the round's clients.
    pub fn metrics(&self) -> Metrics {
        self.metrics
    }

    /// Number of rows some client with non-zero weight sent this round.
    pub fn touched_rows(&self) -> usize {
        self.touched.iter().filter(|&&t| t).count()
    }

    /// Writes the dense weighted mean delta (`sum w·delta / sum w`, zero for rows nobody sent)
    /// into `out` (layout: see the module docs). Returns `false`, leaving `out` unspecified,
    /// when there is no weight or the mean is not finite: the server then skips the update.
    pub fn mean_delta(&self, out: &mut [f32]) -> bool {
        let k = self.k;
        assert_eq!(
            out.len(),
            self.param_len(),
            "mean_delta buffer has the wrong length"
        );
        if self.weight_sum <= 0.0 {
            return false;
        }
        out.fill(0.0);
        let mut finite = true;
        for i in (0..self.items).filter(|&i| self.touched[i]) {
            for (o, a) in out[i * k..(i + 1) * k]
                .iter_mut()
                .zip(&self.acc[i * k..(i + 1) * k])
            {
                *o = (a / self.weight_sum) as f32;
                finite &= o.is_finite();
            }
            if self.with_bias {
                let o = &mut out[self.items * k + i];
                *o = (self.acc_bias[i] / self.weight_sum) as f32;
                finite &= o.is_finite();
            }
        }
        finite
    }

    /// Length of the flat parameter vector (`items · K`, plus `items` with biases).
    pub fn param_len(&self) -> usize {
        self.items * self.k + if self.with_bias { self.items } else { 0 }
    }
}

/// A server optimizer with its state; `step` takes the mean client delta and applies
/// `gradient = −mean_delta` to the parameters, as TFF's server does.
#[derive(Clone, Debug)]
pub enum ServerOptimizer {
    /// `params ← params − lr · g` (= `params + lr · mean_delta`).
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Keras SGD with momentum: `v ← μ v − lr · g`, then `params ← params + v` (heavy ball)
    /// or `params ← params + μ v − lr · g` (Nesterov).
    Momentum {
        /// Learning rate.
        lr: f32,
        /// Momentum coefficient μ.
        momentum: f32,
        /// Nesterov variant.
        nesterov: bool,
        /// Velocities.
        v: Vec<f32>,
    },
    /// Keras Adam: `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
    /// `params ← params − lr·√(1−β2^t)/(1−β1^t) · m / (√v + ε)`.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta_1: f32,
        /// Second-moment decay.
        beta_2: f32,
        /// Denominator fuzz.
        epsilon: f32,
        /// Steps taken.
        t: u32,
        /// First moments.
        m: Vec<f32>,
        /// Second moments.
        v: Vec<f32>,
    },
    /// Keras (OptimizerV2) Adagrad: `acc ← acc + g²`, `params ← params − lr · g / (√acc + ε)`.
    Adagrad {
        /// Learning rate.
        lr: f32,
        /// Denominator fuzz.
        epsilon: f32,
        /// Squared-gradient accumulators (start at `initial_accumulator`).
        acc: Vec<f32>,
    },
    /// Yogi as TensorFlow Addons implements it (and TFF uses): `m ← β1 m + (1−β1) g`,
    /// `v ← v + (1−β2) · sign(g² − v) · g²`,
    /// `params ← params − lr·√(1−β2^t)/(1−β1^t) · m / (√v + ε)`.
    Yogi {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta_1: f32,
        /// Second-moment decay.
        beta_2: f32,
        /// Denominator fuzz.
        epsilon: f32,
        /// Steps taken.
        t: u32,
        /// First moments.
        m: Vec<f32>,
        /// Second moments (start at `initial_accumulator`).
        v: Vec<f32>,
    },
}

impl ServerOptimizer {
    /// A fresh optimizer for `len` parameters.
    pub fn new(cfg: &ServerConfig, len: usize) -> Self {
        match *cfg {
            ServerConfig::Sgd { lr } => ServerOptimizer::Sgd { lr },
            ServerConfig::Momentum {
                lr,
                momentum,
                nesterov,
            } => ServerOptimizer::Momentum {
                lr,
                momentum,
                nesterov,
                v: vec![0.0; len],
            },
            ServerConfig::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
            } => ServerOptimizer::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
                t: 0,
                m: vec![0.0; len],
                v: vec![0.0; len],
            },
            ServerConfig::Adagrad {
                lr,
                initial_accumulator,
                epsilon,
            } => ServerOptimizer::Adagrad {
                lr,
                epsilon,
                acc: vec![initial_accumulator; len],
            },
            ServerConfig::Yogi {
                lr,
                beta_1,
                beta_2,
                epsilon,
                initial_accumulator,
            } => ServerOptimizer::Yogi {
                lr,
                beta_1,
                beta_2,
                epsilon,
                t: 0,
                m: vec![0.0; len],
                v: vec![initial_accumulator; len],
            },
        }
    }

    /// Sets the learning rate of the next steps (for schedules), keeping the state.
    pub fn set_lr(&mut self, new: f32) {
        match self {
            ServerOptimizer::Sgd { lr }
            | ServerOptimizer::Momentum { lr, .. }
            | ServerOptimizer::Adam { lr, .. }
            | ServerOptimizer::Adagrad { lr, .. }
            | ServerOptimizer::Yogi { lr, .. } => *lr = new,
        }
    }

    /// One server step with gradient `−mean_delta`. Arithmetic is `f32`, as Keras's.
    pub fn step(&mut self, params: &mut [f32], mean_delta: &[f32]) {
        assert_eq!(
            params.len(),
            mean_delta.len(),
            "optimizer step length mismatch"
        );
        match self {
            ServerOptimizer::Sgd { lr } => {
                for (p, &d) in params.iter_mut().zip(mean_delta) {
                    *p -= *lr * -d;
                }
            }
            ServerOptimizer::Momentum {
                lr,
                momentum,
                nesterov,
                v,
            } => {
                for i in 0..params.len() {
                    let g = -mean_delta[i];
                    v[i] = *momentum * v[i] - *lr * g;
                    params[i] += if *nesterov {
                        *momentum * v[i] - *lr * g
                    } else {
                        v[i]
                    };
                }
            }
            ServerOptimizer::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
                t,
                m,
                v,
            } => {
                *t += 1;
                let lr_t = bias_corrected_lr(*lr, *beta_1, *beta_2, *t);
                for i in 0..params.len() {
                    let g = -mean_delta[i];
                    m[i] = *beta_1 * m[i] + (1.0 - *beta_1) * g;
                    v[i] = *beta_2 * v[i] + (1.0 - *beta_2) * g * g;
                    params[i] -= lr_t * m[i] / (v[i].sqrt() + *epsilon);
                }
            }
            ServerOptimizer::Adagrad { lr, epsilon, acc } => {
                for i in 0..params.len() {
                    let g = -mean_delta[i];
                    acc[i] += g * g;
                    params[i] -= *lr * g / (acc[i].sqrt() + *epsilon);
                }
            }
            ServerOptimizer::Yogi {
                lr,
                beta_1,
                beta_2,
                epsilon,
                t,
                m,
                v,
            } => {
                *t += 1;
                let lr_t = bias_corrected_lr(*lr, *beta_1, *beta_2, *t);
                for i in 0..params.len() {
                    let g = -mean_delta[i];
                    let g2 = g * g;
                    m[i] = *beta_1 * m[i] + (1.0 - *beta_1) * g;
                    let sign = if g2 > v[i] {
                        1.0
                    } else if g2 < v[i] {
                        -1.0
                    } else {
                        0.0
                    };
                    v[i] += (1.0 - *beta_2) * sign * g2;
                    params[i] -= lr_t * m[i] / (v[i].sqrt() + *epsilon);
                }
            }
        }
    }
}

/// `lr · √(1 − β2^t) / (1 − β1^t)`, the bias-corrected step size of Adam and Yogi.
fn bias_corrected_lr(lr: f32, beta_1: f32, beta_2: f32, t: u32) -> f32 {
    let t = t as i32;
    lr * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t))
}
