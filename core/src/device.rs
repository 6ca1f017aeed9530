//! One device's workspace and its whole round: reconstruct the user embedding with the item
//! rows frozen, train the touched item rows with the user embedding frozen, emit the update.
//!
//! Arithmetic order is fixed (documented per step) so that a board and the simulator produce
//! the same bits. Per batch of size `B` with errors `e_j = y_hat_j - y_j` from the forward pass
//! before the step, and `c = (2 * lr) / B` (the gradient of the batch-mean squared error):
//! `dot` is [`Scalar::dot`] (for f32: eight interleaved partial sums combined pairwise).
//! - reconstruction: `g = sum_j e_j * v_j` (left to right), then `u[k] = u[k] - c * g[k]`
//!   (with L2: `u[k] = u[k] - (c * g[k] + (2 * lambda * lr) * u[k])`); `b_u = b_u - c * sum_j e_j`;
//! - post-reconstruction: for each example in order, `v[k] = v[k] + (-(c * e_j)) * u[k]`, and
//!   `b_i = b_i - c * e_j`. Since `u` is frozen, this equals the summed batch gradient.

use crate::dataset::ClientData;
use crate::error::{Error, Phase, Result};
use crate::model::{Metrics, Params, RoundConfig};
use crate::ridge::RidgeNum;
use crate::rng::DeviceRng;
use crate::rows::ItemRows;
use crate::scalar::Scalar;
use crate::split::Schedule;
use heapless::Vec;

/// The steps of a phase the round iterates (the whole schedule, or its first epoch).
type Steps = core::iter::Take<Schedule>;

/// The sparse update of one training round: the deltas (final − initial) of the item rows the
/// client touched, sorted by item id. It borrows the device's workspace, so it costs no copy.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a, S, const K: usize> {
    /// Touched item ids, ascending.
    pub items: &'a [u32],
    /// `deltas[i]` is the change of row `items[i]`.
    pub deltas: &'a [[S; K]],
    /// Item-bias deltas, parallel to `items`, when the model has item biases.
    pub bias_deltas: Option<&'a [S]>,
    /// Aggregation weight (examples iterated, 1 for uniform, 0 for a non-finite update).
    pub weight: u32,
    /// Training metrics from each post-reconstruction batch's forward pass.
    pub metrics: Metrics,
}

/// The statically sized workspace of one device: a client dataset of at most `N` examples,
/// embeddings of width `K`, and at most `R` item rows trained per round (default `N`; with
/// `split_dataset` a round trains the rows of about half its examples, so a board can budget
/// `R` near `N / 2`). Put it in a `static` (firmware) or a per-thread box (simulator) and
/// reuse it for every round.
#[derive(Debug, Clone)]
pub struct Device<S, const N: usize, const K: usize, const R: usize = N> {
    data: ClientData<S, N>,
    /// Example indices in batch order (after cap and shuffle).
    order: [u16; N],
    kept: usize,
    /// Per-batch errors of the forward pass.
    err: [S; N],
    /// Example index → slot of its item in `touched`/`work`.
    slot_of: [u16; N],
    /// Items whose rows this round trains (or excludes from ranking), ascending.
    touched: Vec<u32, N>,
    work: [[S; K]; R],
    work_bias: [S; R],
    user: [S; K],
    user_bias: S,
    /// Slots of `touched`/`work` trained by the post-reconstruction phase; the slots after
    /// them hold implicit-feedback deltas ([`crate::implicit`]).
    trained: usize,
    /// With implicit feedback, the training round's step of the mean row, and of every
    /// implicit row of a reconstruction item (the step scaled by `lr * n^(-1/2)`).
    mean_step: [S; K],
    implicit_step: [S; K],
    /// Prediction terms of the round that reconstructed `user`, valid when `reconstructed`,
    /// so scoring a streamed catalogue does not re-derive them for every item. (Not an
    /// `Option`: its `None` would make the workspace's initial bytes non-zero and move a
    /// `static` device from `.bss` into flash.)
    predictor: Params<S>,
    reconstructed: bool,
}

impl<S: Scalar, const N: usize, const K: usize, const R: usize> Default for Device<S, N, K, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Scalar, const N: usize, const K: usize, const R: usize> Device<S, N, K, R> {
    const CHECK: () = assert!(
        N <= u16::MAX as usize && N > 0 && K > 0 && R > 0,
        "N must fit in u16; N, K and R must be positive"
    );

    /// An empty workspace (usable in a `static`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        Self {
            data: ClientData::new(),
            order: [0; N],
            kept: 0,
            err: [S::ZERO; N],
            slot_of: [0; N],
            touched: Vec::new(),
            work: [[S::ZERO; K]; R],
            work_bias: [S::ZERO; R],
            user: [S::ZERO; K],
            user_bias: S::ZERO,
            trained: 0,
            mean_step: [S::ZERO; K],
            implicit_step: [S::ZERO; K],
            predictor: Params::zero(),
            reconstructed: false,
        }
    }

    /// The client's dataset.
    pub fn data(&self) -> &ClientData<S, N> {
        &self.data
    }

    /// The client's dataset, to clear and refill for the next client.
    pub fn data_mut(&mut self) -> &mut ClientData<S, N> {
        &mut self.data
    }

    /// The reconstructed user embedding of the last round (never leaves the device).
    pub fn user(&self) -> &[S; K] {
        &self.user
    }

    /// The reconstructed user bias (zero when the model has none).
    pub fn user_bias(&self) -> S {
        self.user_bias
    }

    /// One training round (docs/SEMANTICS.md "One client's round"): returns the sparse update.
    pub fn train<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        cfg: &RoundConfig,
        seed: u64,
    ) -> Result<Update<'_, S, K>> {
        let p = Params::<S>::new(cfg)?;
        let (recon, post) = self.prepare(rows, cfg, &p)?;
        let both_halves = p.implicit().is_some_and(|imp| imp.both_halves);
        let all_steps = |s: &Schedule| s.clone().take(s.steps());
        self.reconstruct_user(rows, cfg, &p, recon.clone(), Some(all_steps(&post)), seed)?;
        let metrics = if both_halves {
            // The exchanged pass: reconstruct on the post half, train the reconstruction
            // half's rows (each example once), from where the first pass left the rows.
            self.load_touched(rows, &p, &[post.clone(), recon.clone()])?;
            let mut metrics = self.post_phase(&p, all_steps(&post));
            let first = (self.mean_step, self.implicit_step);
            self.reconstruct_user(rows, cfg, &p, post.clone(), Some(recon.first_epoch()), seed)?;
            metrics.merge(&self.post_phase(&p, recon.first_epoch()));
            self.add_implicit_rows_both(&p, &recon, &post, first)?;
            metrics
        } else {
            self.load_touched(rows, &p, core::slice::from_ref(&post))?;
            self.add_implicit_rows(&p, recon)?;
            self.post_phase(&p, all_steps(&post))
        };
        let weight = cfg.weight(self.kept);
        let finite = self.make_deltas(rows, &p)?;
        let m = self.touched.len();
        Ok(Update {
            items: &self.touched,
            deltas: &self.work[..m],
            bias_deltas: p.item_bias.then_some(&self.work_bias[..m]),
            weight: if finite { weight } else { 0 },
            metrics,
        })
    }

    /// One evaluation round (docs/SEMANTICS.md "Evaluation"): reconstruct on the first split, then
    /// metrics on the second with no training. Requires `split_dataset` so the halves are
    /// disjoint. Afterwards [`Self::rank`] excludes the reconstruction half's items.
    pub fn evaluate<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        cfg: &RoundConfig,
        seed: u64,
    ) -> Result<Metrics> {
        if !cfg.split.split_dataset {
            return Err(Error::InvalidConfig {
                what: "evaluation needs split_dataset so its halves are disjoint",
            });
        }
        let p = Params::<S>::new(cfg)?;
        let (recon, post) = self.prepare(rows, cfg, &p)?;
        self.reconstruct_user(rows, cfg, &p, recon.clone(), None, seed)?;
        self.collect_items(recon);

        let mut metrics = Metrics::default();
        for range in post {
            for pos in range {
                let e = usize::from(self.order[pos]);
                let item = self.data.items()[e];
                let row = rows.row(item).ok_or(Error::MissingItemRow { item })?;
                let y_hat = p.predict(&self.user, self.user_bias, row, rows.bias(item));
                let err = y_hat - self.data.ratings()[e];
                metrics.record(err.to_f32(), err.abs() <= p.threshold);
            }
        }
        Ok(metrics)
    }

    /// Reconstructs the user embedding only (for recommending to a user): the reconstruction
    /// phase of `cfg` (use `split_dataset: false` to learn from every rating). Afterwards
    /// [`Self::rank`] excludes every item the client rated.
    pub fn reconstruct<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        cfg: &RoundConfig,
        seed: u64,
    ) -> Result<()> {
        let p = Params::<S>::new(cfg)?;
        let (recon, _) = self.prepare(rows, cfg, &p)?;
        self.reconstruct_user(rows, cfg, &p, recon, None, seed)?;
        self.touched.clear();
        for &item in self.data.items() {
            // Capacity equals the dataset's, so this cannot fail.
            let _ = self.touched.push(item);
        }
        self.touched.sort_unstable();
        self.dedup_touched();
        Ok(())
    }

    /// Items the last [`Self::evaluate`] or [`Self::reconstruct`] excludes from ranking.
    pub fn excluded(&self) -> &[u32] {
        &self.touched
    }

    /// The examples `phase` of the last round used, in batch order (for ranking metrics:
    /// the held-out half's items and ratings).
    pub fn phase_examples(
        &self,
        cfg: &RoundConfig,
        phase: Phase,
    ) -> impl Iterator<Item = (u32, S)> + '_ {
        cfg.split
            .schedule(phase, self.kept)
            .flatten()
            .map(move |pos| {
                let e = usize::from(self.order[pos]);
                (self.data.items()[e], self.data.ratings()[e])
            })
    }

    /// Score of one streamed item for the user of the last successful round, with that round's
    /// model terms; `None` if the item is excluded (rated), is not in the catalogue (an
    /// implicit row), or no user was reconstructed yet.
    pub fn score(&self, item: u32, row: &[S; K], item_bias: S) -> Option<S> {
        if self.touched.binary_search(&item).is_ok() {
            return None;
        }
        if !self.reconstructed {
            return None;
        }
        let p = &self.predictor;
        // Implicit rows and the mean row are not items.
        if p.implicit().is_some_and(|imp| item >= imp.items) {
            return None;
        }
        Some(p.predict(&self.user, self.user_bias, row, item_bias))
    }

    /// Streams every row of `rows` through `top`, skipping excluded items (the device holds
    /// only the heap, never the matrix).
    pub fn rank<V: ItemRows<S, K>, const CAP: usize>(
        &self,
        rows: &V,
        cfg: &RoundConfig,
        top: &mut crate::rank::TopK<S, CAP>,
    ) -> Result<()> {
        let p = Params::<S>::new(cfg)?;
        let mut excluded = self.touched.iter().peekable();
        for item in 0..p.catalogue(rows) {
            while excluded.next_if(|&&x| x < item).is_some() {}
            if excluded.next_if_eq(&&item).is_some() {
                continue;
            }
            let Some(row) = rows.row(item) else { continue };
            top.offer(
                item,
                p.predict(&self.user, self.user_bias, row, rows.bias(item)),
            );
        }
        Ok(())
    }

    /// Validates the data against the rows, orders it, and returns both phases' schedules.
    fn prepare<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        cfg: &RoundConfig,
        p: &Params<S>,
    ) -> Result<(Schedule, Schedule)> {
        if let Some(imp) = p.implicit()
            && rows.num_items() != imp.rows()
        {
            return Err(Error::InvalidConfig {
                what: "implicit feedback needs 2 * items + 1 rows (items, implicit rows, mean row)",
            });
        }
        let num_items = p.catalogue(rows);
        if let Some(&item) = self.data.items().iter().find(|&&i| i >= num_items) {
            return Err(Error::ItemOutOfRange { item, num_items });
        }
        self.kept = cfg.split.order(self.data.len(), &mut self.order);
        let recon = cfg.split.schedule(Phase::Reconstruction, self.kept);
        let post = cfg.split.schedule(Phase::PostReconstruction, self.kept);
        recon.require_nonempty(Phase::Reconstruction)?;
        post.require_nonempty(Phase::PostReconstruction)?;
        Ok((recon, post))
    }

    /// Reconstruction by the configured method (SGD from a seeded start, or the exact solve).
    /// A training round passes its post-reconstruction schedule, which a learned prior mean
    /// needs for its step.
    fn reconstruct_user<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        cfg: &RoundConfig,
        p: &Params<S>,
        recon: Schedule,
        post: Option<Steps>,
        seed: u64,
    ) -> Result<()> {
        self.reconstructed = false;
        match p.exact {
            None => {
                self.init_user(cfg, seed);
                self.reconstruct_phase(rows, p, recon)?;
            }
            Some(exact) => self.reconstruct_exact(rows, p, recon, post, exact)?,
        }
        self.predictor = *p;
        self.reconstructed = true;
        Ok(())
    }

    /// The exact ridge solution ([`crate::ridge`]) over the reconstruction phase's examples,
    /// each once. The `K x K` system lives on the stack only while it is solved. Per example:
    /// `K (K + 3) / 2` multiply-adds for the Gram matrix ([`Scalar::ridge_sums`]), then about
    /// `K^3 / 6` for the factorisation. Never inlined, so the system's stack frame exists only
    /// while it is solved (not in every SGD round).
    #[inline(never)]
    fn reconstruct_exact<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        p: &Params<S>,
        recon: Schedule,
        post: Option<Steps>,
        exact: crate::model::ExactParams,
    ) -> Result<()> {
        type R<S> = <S as Scalar>::Ridge;
        let zero = <R<S> as RidgeNum>::ZERO;
        let ridge = <R<S> as RidgeNum>::from_f32;
        let range = |what: &'static str, column: usize| Error::RidgeOutOfRange { what, column };
        // The reconstruction half's examples, each once, with its target's parts.
        let examples = recon.first_epoch().flatten().map(|pos| {
            let e = usize::from(self.order[pos]);
            let item = self.data.items()[e];
            let row = rows.row(item).ok_or(Error::MissingItemRow { item })?;
            Ok(crate::ridge::normal::Example {
                row,
                rating: self.data.ratings()[e],
                item_bias: if p.item_bias {
                    rows.bias(item)
                } else {
                    S::ZERO
                },
                mu: p.mu.unwrap_or(S::ZERO),
            })
        });
        let mut sys = crate::ridge::normal::Normal::<R<S>, K>::new();
        S::ridge_sums(examples, p.user_bias, &mut sys)?;
        let crate::ridge::normal::Normal {
            ref mut a,
            ref mut b,
            ref mean,
            mut r_mean,
            n,
        } = sys;
        // The prior mean c the embedding is pulled towards (zero without implicit feedback).
        // Solving for u' = u - c with targets less dot(v, c) is the same system with a zero
        // prior mean: by linearity, b -= G c (G the Gram matrix before the regulariser, its
        // lower triangle stored) and mean(r) -= dot(mean(v), c).
        let (prior, scale) = match exact.implicit.get() {
            Some(imp) => self.implicit_prior(rows, &recon, imp)?,
            None => ([zero; K], zero),
        };
        if exact.implicit.get().is_some() {
            let mut shifted = [zero; K];
            for (i, out) in shifted.iter_mut().enumerate() {
                let g_row = (0..K).map(|j| if j <= i { a[i][j] } else { a[j][i] });
                *out = R::<S>::sum_products::<true>(b[i], g_row.zip(prior.iter().copied()))
                    .ok_or_else(|| range("right-hand side", i))?;
            }
            *b = shifted;
            r_mean = R::<S>::sum_products::<true>(r_mean, mean.iter().copied().zip(prior))
                .ok_or_else(|| range("user bias", 0))?;
        }
        // The regularisers for this user's n examples: per example, plus a prior's / n.
        let regulariser =
            |x: f32| R::<S>::checked_from_f32(x).ok_or_else(|| range("regulariser", 0));
        let per_user = |l2: f32, prior: f32| -> Result<R<S>> {
            let l = regulariser(l2)?;
            if prior > 0.0 {
                l.checked_add(regulariser(prior)?.div_count(n))
                    .ok_or_else(|| range("regulariser", 0))
            } else {
                Ok(l)
            }
        };
        let lambda = per_user(exact.user_l2, exact.user_prior)?;
        let bias_l2 = per_user(exact.bias_l2, exact.bias_prior)?;
        // A penalised user bias b = s (mean(r) - m.u), s = 1 / (1 + bias_l2), adds
        // eps (mean(r) - m.u)^2 to the objective, eps = bias_l2 s: a rank-one term.
        let shrink_bias = p.user_bias && bias_l2 > zero;
        let s = ridge(1.0)
            .checked_add(bias_l2)
            .ok_or_else(|| range("regulariser", 0))?
            .recip();
        let eps = bias_l2 * s;
        for i in 0..K {
            a[i][i] = a[i][i]
                .checked_add(lambda)
                .ok_or_else(|| range("system", i))?;
            if shrink_bias {
                let em = eps * mean[i];
                for (j, (aij, mj)) in a[i][..=i].iter_mut().zip(mean).enumerate() {
                    *aij = aij
                        .checked_add(em * *mj)
                        .ok_or_else(|| range("system", j))?;
                }
                b[i] = b[i]
                    .checked_add(em * r_mean)
                    .ok_or_else(|| range("right-hand side", i))?;
            }
        }
        let inv_d = crate::ridge::factor_ldlt(a, lambda.half())?;
        crate::ridge::substitute_ldlt(a, &inv_d, b)?;
        for (k, ((u, x), c)) in self.user.iter_mut().zip(b.iter()).zip(&prior).enumerate() {
            // Only with a prior mean, so that a zero one cannot turn -0 into +0.
            let x = if exact.implicit.get().is_some() {
                x.checked_add(*c).ok_or_else(|| range("solution", k))?
            } else {
                *x
            };
            *u = S::from_ridge(x);
        }
        self.user_bias = S::ZERO;
        if p.user_bias {
            // b_u = mean(r) - dot(m, u') [times s when penalised], with u' in the ridge type
            // (before rounding to S).
            let mut bu =
                R::<S>::sum_products::<true>(r_mean, mean.iter().copied().zip(b.iter().copied()))
                    .ok_or_else(|| range("user bias", 0))?;
            if shrink_bias {
                bu = bu.checked_mul(s).ok_or_else(|| range("user bias", 0))?;
            }
            self.user_bias = S::from_ridge(bu);
        }
        if let (Some(imp), Some(post)) = (exact.implicit.get(), post) {
            // The step of the prior mean: u = A^-1 (X^T r / n + Lambda c), so the post-phase
            // loss L moves with c by dL/dc = lambda * (A^-1 dL/du) restricted to u (the bias's
            // own prior mean is fixed at zero). A^-1 reuses the factor just computed.
            let mut g = [zero; K];
            let g_bias = self.post_gradient(rows, p, post, &mut g)?;
            if p.user_bias {
                // Eliminating the bias row of the (K + 1) system as the solve did.
                let gb = g_bias * s;
                for (gi, m) in g.iter_mut().zip(mean) {
                    *gi = *gi - *m * gb;
                }
            }
            crate::ridge::substitute_ldlt(a, &inv_d, &mut g)?;
            let implicit_lr = ridge(imp.lr) * scale;
            for ((ms, is), gi) in self
                .mean_step
                .iter_mut()
                .zip(&mut self.implicit_step)
                .zip(&g)
            {
                let step = -(lambda * *gi);
                *ms = S::from_ridge(step);
                *is = S::from_ridge(implicit_lr * step);
            }
        }
        Ok(())
    }

    /// The prior mean `c = m + n^(-1/2) sum_j y_j` over the reconstruction examples' items,
    /// and the scale `n^(-1/2)`, in the ridge type.
    fn implicit_prior<V: ItemRows<S, K>>(
        &self,
        rows: &V,
        recon: &Schedule,
        imp: crate::implicit::Implicit,
    ) -> Result<([<S as Scalar>::Ridge; K], <S as Scalar>::Ridge)> {
        let zero = <<S as Scalar>::Ridge as RidgeNum>::ZERO;
        let mut sum = [zero; K];
        let mut n = 0u32;
        for range in recon.first_epoch() {
            for pos in range {
                let item = imp.implicit_row(self.data.items()[usize::from(self.order[pos])]);
                let y = rows.row(item).ok_or(Error::MissingItemRow { item })?;
                for (s, y) in sum.iter_mut().zip(y) {
                    *s = *s + y.to_ridge();
                }
                n += 1;
            }
        }
        let item = imp.mean_row();
        let m = rows.row(item).ok_or(Error::MissingItemRow { item })?;
        let scale = <<S as Scalar>::Ridge as RidgeNum>::from_f32(crate::implicit::sum_scale(n));
        let mut prior = [zero; K];
        for ((c, m), s) in prior.iter_mut().zip(m).zip(&sum) {
            *c = m.to_ridge() + *s * scale;
        }
        Ok((prior, scale))
    }

    /// The gradient of the post-reconstruction loss (each batch's mean squared error, scaled
    /// by `2 * post_lr` as the post phase steps) with respect to the user embedding, into `g`,
    /// and to the user bias (returned), at the reconstructed user and the round's rows.
    fn post_gradient<V: ItemRows<S, K>>(
        &self,
        rows: &V,
        p: &Params<S>,
        post: Steps,
        g: &mut [<S as Scalar>::Ridge; K],
    ) -> Result<<S as Scalar>::Ridge> {
        let mut g_bias = <<S as Scalar>::Ridge as RidgeNum>::ZERO;
        let two_lr = p.two_post_lr.to_ridge();
        for range in post {
            let c = two_lr.div_count(range.len() as u32);
            for pos in range {
                let (row, err) = self.error_at(rows, p, pos)?;
                let ce = c * err.to_ridge();
                for (gk, v) in g.iter_mut().zip(row) {
                    *gk = *gk + ce * v.to_ridge();
                }
                g_bias = g_bias + ce;
            }
        }
        Ok(g_bias)
    }

    /// The example at schedule position `pos`: its item's row and the prediction error
    /// `y_hat - y` with the current user embedding and bias.
    fn error_at<'r, V: ItemRows<S, K>>(
        &self,
        rows: &'r V,
        p: &Params<S>,
        pos: usize,
    ) -> Result<(&'r [S; K], S)> {
        let e = usize::from(self.order[pos]);
        let item = self.data.items()[e];
        let row = rows.row(item).ok_or(Error::MissingItemRow { item })?;
        let err =
            p.predict(&self.user, self.user_bias, row, rows.bias(item)) - self.data.ratings()[e];
        Ok((row, err))
    }

    /// Fresh user embedding, uniform in `[-scale, scale)`, drawn from the round's seed
    /// (stateless clients: nothing carries over between rounds).
    fn init_user(&mut self, cfg: &RoundConfig, seed: u64) {
        let mut rng = DeviceRng::new(seed);
        let (lo, width) = (-cfg.init_scale, 2.0 * cfg.init_scale);
        for u in self.user.iter_mut() {
            *u = S::from_f32(lo + width * rng.unit_f32());
        }
        self.user_bias = S::ZERO;
    }

    /// Minibatch SGD on the user embedding (and bias) with the item rows frozen.
    fn reconstruct_phase<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        p: &Params<S>,
        recon: Schedule,
    ) -> Result<()> {
        let mut grad = [S::ZERO; K];
        for range in recon {
            let c = p.two_recon_lr.div_count(range.len() as u32);
            grad.fill(S::ZERO);
            let mut grad_bias = S::ZERO;
            for pos in range {
                let (row, err) = self.error_at(rows, p, pos)?;
                S::axpy(err, row, &mut grad);
                grad_bias = grad_bias + err;
            }
            match p.l2_step {
                None => S::axpy(-c, &grad, &mut self.user),
                Some(l2) => {
                    for (u, g) in self.user.iter_mut().zip(&grad) {
                        *u = *u - (c * *g + l2 * *u);
                    }
                }
            }
            if p.user_bias {
                self.user_bias = self.user_bias - c * grad_bias;
            }
        }
        Ok(())
    }

    /// Sorted, deduplicated items of the examples `sched` visits, into `touched`.
    fn collect_items(&mut self, sched: Schedule) {
        self.touched.clear();
        for range in sched {
            for pos in range {
                let item = self.data.items()[usize::from(self.order[pos])];
                // Repeats across epochs can fill the buffer; distinct items never exceed N,
                // so compacting makes room.
                if self.touched.push(item).is_err() {
                    self.touched.sort_unstable();
                    self.dedup_touched();
                    let _ = self.touched.push(item);
                }
            }
        }
        self.touched.sort_unstable();
        self.dedup_touched();
    }

    fn dedup_touched(&mut self) {
        let mut w = 0;
        for r in 0..self.touched.len() {
            if w == 0 || self.touched[r] != self.touched[w - 1] {
                self.touched[w] = self.touched[r];
                w += 1;
            }
        }
        self.touched.truncate(w);
    }

    /// Copies the rows the post-reconstruction phase touches into the workspace and maps each
    /// example to its row's slot.
    fn load_touched<V: ItemRows<S, K>>(
        &mut self,
        rows: &V,
        p: &Params<S>,
        phases: &[Schedule],
    ) -> Result<()> {
        // One sort gives both the distinct items and each example's slot: the examples the
        // phase visits (each once: later epochs repeat the first) sorted by item, then one
        // walk that numbers the distinct items and compacts them into `touched` in place.
        self.touched.clear();
        for phase in phases {
            for range in phase.first_epoch() {
                for pos in range {
                    // At most `kept <= N` distinct examples, so this cannot fail.
                    let _ = self.touched.push(u32::from(self.order[pos]));
                }
            }
        }
        let items = self.data.items();
        self.touched.sort_unstable_by_key(|&e| items[e as usize]);
        let mut slots = 0;
        for j in 0..self.touched.len() {
            let e = self.touched[j] as usize;
            let item = items[e];
            if slots == 0 || self.touched[slots - 1] != item {
                // slots <= j: entry j was read above, so overwriting it is safe.
                self.touched[slots] = item;
                slots += 1;
            }
            self.slot_of[e] = (slots - 1) as u16;
        }
        self.touched.truncate(slots);
        if self.touched.len() > R {
            return Err(Error::CapacityExceeded {
                what: "trained item rows",
                capacity: R,
            });
        }
        self.trained = self.touched.len();
        for (s, &item) in self.touched.iter().enumerate() {
            let row = rows.row(item).ok_or(Error::MissingItemRow { item })?;
            self.work[s] = *row;
            self.work_bias[s] = if p.item_bias {
                rows.bias(item)
            } else {
                S::ZERO
            };
        }
        Ok(())
    }

    /// With implicit feedback, appends the learned prior mean's rows to the update after the
    /// trained rows: the implicit row of every reconstruction item, then the mean row, each
    /// holding its delta directly (they are not trained by the post phase).
    fn add_implicit_rows(&mut self, p: &Params<S>, recon: Schedule) -> Result<()> {
        let Some(imp) = p.implicit() else {
            return Ok(());
        };
        let full = Error::CapacityExceeded {
            what: "trained item rows",
            capacity: R.min(N),
        };
        for range in recon.first_epoch() {
            for pos in range {
                let item = self.data.items()[usize::from(self.order[pos])];
                self.touched
                    .push(imp.implicit_row(item))
                    .map_err(|_| full)?;
            }
        }
        self.touched[self.trained..].sort_unstable();
        self.dedup_touched();
        self.touched.push(imp.mean_row()).map_err(|_| full)?;
        let m = self.touched.len();
        if m > R {
            return Err(full);
        }
        for s in self.trained..m - 1 {
            self.work[s] = self.implicit_step;
            self.work_bias[s] = S::ZERO;
        }
        self.work[m - 1] = self.mean_step;
        self.work_bias[m - 1] = S::ZERO;
        Ok(())
    }

    /// [`Self::add_implicit_rows`] after both passes of a both-halves round: every rated
    /// item's implicit row (`touched` holds them all) with the step of each pass that
    /// reconstructed from it (`first`: the first pass's mean and implicit steps), then the mean
    /// row with the sum of both passes' steps.
    fn add_implicit_rows_both(
        &mut self,
        p: &Params<S>,
        recon: &Schedule,
        post: &Schedule,
        first: ([S; K], [S; K]),
    ) -> Result<()> {
        let Some(imp) = p.implicit() else {
            return Ok(());
        };
        let full = Error::CapacityExceeded {
            what: "trained item rows",
            capacity: R.min(N),
        };
        let m = self.trained;
        if 2 * m + 1 > R || 2 * m + 1 > N {
            return Err(full);
        }
        for s in 0..m {
            let _ = self.touched.push(imp.implicit_row(self.touched[s]));
            self.work[m + s] = [S::ZERO; K];
            self.work_bias[m + s] = S::ZERO;
        }
        let _ = self.touched.push(imp.mean_row());
        for (phase, step) in [(recon, &first.1), (post, &self.implicit_step)] {
            for range in phase.first_epoch() {
                for pos in range {
                    let s = m + usize::from(self.slot_of[usize::from(self.order[pos])]);
                    for (w, d) in self.work[s].iter_mut().zip(step) {
                        *w = *w + *d;
                    }
                }
            }
        }
        for ((w, a), b) in self.work[2 * m]
            .iter_mut()
            .zip(&first.0)
            .zip(&self.mean_step)
        {
            *w = *a + *b;
        }
        self.work_bias[2 * m] = S::ZERO;
        Ok(())
    }

    /// Minibatch SGD on the touched rows with the user frozen; metrics from each batch's
    /// forward pass before its step.
    fn post_phase(&mut self, p: &Params<S>, post: Steps) -> Metrics {
        let mut metrics = Metrics::default();
        for range in post {
            let n = range.len();
            let c = p.two_post_lr.div_count(n as u32);
            for (j, pos) in range.clone().enumerate() {
                let e = usize::from(self.order[pos]);
                let s = usize::from(self.slot_of[e]);
                let y_hat = p.predict(&self.user, self.user_bias, &self.work[s], self.work_bias[s]);
                let err = y_hat - self.data.ratings()[e];
                self.err[j] = err;
                metrics.record(err.to_f32(), err.abs() <= p.threshold);
            }
            for (j, pos) in range.enumerate() {
                let e = usize::from(self.order[pos]);
                let s = usize::from(self.slot_of[e]);
                let step = c * self.err[j];
                S::axpy(-step, &self.user, &mut self.work[s]);
                if p.item_bias {
                    self.work_bias[s] = self.work_bias[s] - step;
                }
            }
        }
        metrics
    }

    /// Turns the trained rows into deltas in place (the implicit rows after them already are).
    /// A non-finite delta zeroes the whole update (the caller then reports weight 0), as TFF
    /// does; returns whether it was finite.
    fn make_deltas<V: ItemRows<S, K>>(&mut self, rows: &V, p: &Params<S>) -> Result<bool> {
        let m = self.touched.len();
        let mut finite = self.work[self.trained..m]
            .iter()
            .flatten()
            .all(|w| w.is_finite());
        for s in 0..self.trained {
            let item = self.touched[s];
            let init = rows.row(item).ok_or(Error::MissingItemRow { item })?;
            for (w, i) in self.work[s].iter_mut().zip(init) {
                *w = *w - *i;
                finite &= w.is_finite();
            }
            if p.item_bias {
                self.work_bias[s] = self.work_bias[s] - rows.bias(item);
                finite &= self.work_bias[s].is_finite();
            }
        }
        if !finite {
            for s in 0..m {
                self.work[s] = [S::ZERO; K];
                self.work_bias[s] = S::ZERO;
            }
        }
        Ok(finite)
    }
}
