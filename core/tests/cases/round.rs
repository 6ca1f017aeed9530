//! Hand-worked round cases: each expected number is derived in the comments, and every value
//! involved is exactly representable in binary32, so the asserts are exact.

use fedrecon_core::{
    ClientData, DenseRows, Device, Metrics, ModelConfig, Phase, Q12, Q16, RoundConfig, Scalar,
    SplitConfig, Weighting,
};

/// Rows of the K=2, 3-item cases: v0 = (1, 0), v1 = (0, 1), v2 = (1, 1).
pub const ROWS: [[f32; 2]; 3] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];

/// A config with a zero-width initialisation, so `u` starts at exactly (0, 0) and every step
/// can be worked by hand.
pub fn hand_config(batch_size: u16) -> RoundConfig {
    RoundConfig {
        split: SplitConfig {
            batch_size,
            ..SplitConfig::default()
        },
        recon_lr: 0.25,
        post_lr: 0.5,
        init_scale: 0.0,
        ..RoundConfig::default()
    }
}

fn device_with(pairs: &[(u32, f32)]) -> Device<f32, 16, 2> {
    device_of(pairs)
}

/// A device of any scalar holding `pairs`.
fn device_of<S: Scalar>(pairs: &[(u32, f32)]) -> Device<S, 16, 2> {
    let mut d = Device::new();
    for &(i, r) in pairs {
        d.data_mut().push(i, S::from_f32(r), 3).unwrap();
    }
    d
}

/// [`ROWS`] in scalar `S`.
fn rows_of<S: Scalar>() -> [[S; 2]; 3] {
    ROWS.map(|r| r.map(S::from_f32))
}

/// `x` in scalar `S`.
fn s<S: Scalar>(x: f32) -> S {
    S::from_f32(x)
}

/// docs/SEMANTICS.md "One client's round" 1–5 with batch 2: batch 0 = ex0, ex1 reconstructs; batch 1 =
/// ex2, ex3 trains.
/// Reconstruction: u = (0,0), predictions 0, errors -4 (ex0: item 0, y 4) and -2 (ex1: item 1,
/// y 2); g = -4*v0 - 2*v1 = (-4, -2); c = 2*0.25/2 = 0.25; u = (0,0) - 0.25*g = (1, 0.5).
/// Post: ex2 (item 2, y 3): y_hat = 1.5, e = -1.5; ex3 (item 0, y 5): y_hat = 1, e = -4.
/// Metrics before the step: loss sum 2.25 + 16 = 18.25, |e| sum 5.5, none within 0.5.
/// c = 2*0.5/2 = 0.5; v2 += 0.75*u = (1.75, 1.375); v0 += 2*u = (3, 1).
/// Deltas: item 0 -> (2, 1), item 2 -> (0.75, 0.375); weight = 2 post examples.
pub fn hand_worked_k2_round() {
    hand_worked_k2_round_in::<f32>();
}

/// [`hand_worked_k2_round`] in Q16.16: every value is a multiple of 2^-16, so it is exact too.
pub fn hand_worked_k2_round_q16() {
    hand_worked_k2_round_in::<Q16>();
}

/// [`hand_worked_k2_round`] in Q3.12 (exact: every value is a multiple of 2^-12).
pub fn hand_worked_k2_round_q12() {
    hand_worked_k2_round_in::<Q12>();
}

fn hand_worked_k2_round_in<S: Scalar>() {
    let mut d = device_of::<S>(&[(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0)]);
    let rows = rows_of::<S>();
    let up = d.train(&DenseRows::new(&rows), &hand_config(2), 7).unwrap();
    assert_eq!(up.items, &[0, 2]);
    assert_eq!(up.deltas, &[[s(2.0), s(1.0)], [s(0.75), s(0.375)]]);
    assert_eq!(up.weight, 2);
    assert!(up.bias_deltas.is_none());
    assert_eq!(
        up.metrics,
        Metrics {
            loss_sum: 18.25,
            abs_err_sum: 5.5,
            correct: 0,
            count: 2
        }
    );
    assert_eq!(d.user(), &[s(1.0), s(0.5)]);
}

/// The same item twice in one post batch: both errors come from the forward pass before the
/// step, so the row moves by the sum of both gradients.
/// Batch 2. Recon batch 0 = two copies of (item 2, y 2): e = -2 each, g = (-4, -4),
/// c = 2*0.25/2 = 0.25, u = (1, 1). Post batch 1 = (item 0, y 1), (item 0, y 3): both
/// y_hat = v0.u = 1, so e = 0 (correct) and e = -2; c = 2*0.5/2 = 0.5; v0 moves by
/// -(0.5*0)*u and then by -(0.5*(-2))*u = u: v0 = (2, 1), delta (1, 1). Loss sum 4.
pub fn duplicate_item_in_batch_sums_gradients() {
    duplicate_item_in::<f32>();
}

/// [`duplicate_item_in_batch_sums_gradients`] in Q16.16 (exact).
pub fn duplicate_item_in_batch_q16() {
    duplicate_item_in::<Q16>();
}

/// [`duplicate_item_in_batch_sums_gradients`] in Q3.12 (exact).
pub fn duplicate_item_in_batch_q12() {
    duplicate_item_in::<Q12>();
}

fn duplicate_item_in<S: Scalar>() {
    let mut d = device_of::<S>(&[(2, 2.0), (2, 2.0), (0, 1.0), (0, 3.0)]);
    let rows = rows_of::<S>();
    let up = d.train(&DenseRows::new(&rows), &hand_config(2), 1).unwrap();
    assert_eq!(up.items, &[0]);
    assert_eq!(up.deltas, &[[s(1.0), s(1.0)]]);
    assert_eq!(
        up.metrics,
        Metrics {
            loss_sum: 4.0,
            abs_err_sum: 2.0,
            correct: 1,
            count: 2
        }
    );
    assert_eq!(d.user(), &[s(1.0), s(1.0)]);
}

/// Biases (paper's `add_biases`): y_hat = u.v + b_u + b_i + mu.
/// Data batch 1: ex0 (item 0, y 4) recon, ex1 (item 1, y 2) post. mu = 1, item biases
/// (0.5, 0.25, 0). Recon: y_hat = 0 + 0 + 0.5 + 1 = 1.5, e = -2.5, c = 2*0.25/1 = 0.5,
/// g = -2.5*v0 = (-2.5, 0): u = (1.25, 0); b_u = 0 - 0.5*(-2.5) = 1.25.
/// Post ex1: y_hat = u.v1 + 1.25 + 0.25 + 1 = 0 + 2.5 = 2.5, e = 0.5 (correct, <= 0.5),
/// c = 2*0.5/1 = 1, step = 0.5: v1 = (0,1) - 0.5*(1.25, 0) = (-0.625, 1); b_1 = 0.25 - 0.5.
/// Deltas: item 1 -> (-0.625, 0), bias delta -0.5.
pub fn hand_worked_biases() {
    hand_worked_biases_in::<f32>();
}

/// [`hand_worked_biases`] in Q16.16 (exact).
pub fn hand_worked_biases_q16() {
    hand_worked_biases_in::<Q16>();
}

/// [`hand_worked_biases`] in Q3.12 (exact).
pub fn hand_worked_biases_q12() {
    hand_worked_biases_in::<Q12>();
}

fn hand_worked_biases_in<S: Scalar>() {
    let mut d = device_of::<S>(&[(0, 4.0), (1, 2.0)]);
    let mut cfg = hand_config(1);
    cfg.model = ModelConfig {
        user_bias: true,
        item_bias: true,
        global_mean: Some(1.0),
    };
    let biases = [s::<S>(0.5), s(0.25), s(0.0)];
    let rows = rows_of::<S>();
    let view = DenseRows::with_biases(&rows, &biases).unwrap();
    let up = d.train(&view, &cfg, 3).unwrap();
    assert_eq!(up.items, &[1]);
    assert_eq!(up.deltas, &[[s(-0.625), s(0.0)]]);
    assert_eq!(up.bias_deltas, Some(&[s(-0.5)][..]));
    assert_eq!(
        up.metrics,
        Metrics {
            loss_sum: 0.25,
            abs_err_sum: 0.5,
            correct: 1,
            count: 1
        }
    );
    assert_eq!(d.user(), &[s(1.25), s(0.0)]);
    assert_eq!(d.user_bias(), s(1.25));
}

/// L2 on the user embedding: u starts at (0,0) so the first step is as without L2; a second
/// reconstruction epoch shows the decay. lambda = 0.5, recon lr 0.25: l2 step = 2*0.5*0.25 =
/// 0.25. Batch 1, data ex0 (item 0, y 4) recon, ex1 (item 1, y 2) post; recon_epochs 2.
/// Step 1: e = -4, g = (-4, 0), c = 0.5: u = (2, 0).
/// Step 2: y_hat = 2, e = -2, g = (-2, 0): u0 = 2 - (0.5*(-2) + 0.25*2) = 2 - (-0.5) = 2.5.
pub fn hand_worked_user_l2() {
    let mut d = device_with(&[(0, 4.0), (1, 2.0)]);
    let mut cfg = hand_config(1);
    cfg.user_l2 = 0.5;
    cfg.split.recon_epochs = 2;
    let rows = DenseRows::new(&ROWS);
    d.train(&rows, &cfg, 3).unwrap();
    assert_eq!(d.user(), &[2.5, 0.0]);
}

/// Uniform weighting reports 1 whatever the example count (docs/SEMANTICS.md step 5).
pub fn uniform_weighting_is_one() {
    let mut d = device_with(&[(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0)]);
    let mut cfg = hand_config(1);
    cfg.weighting = Weighting::Uniform;
    assert_eq!(d.train(&DenseRows::new(&ROWS), &cfg, 0).unwrap().weight, 1);
    cfg.weighting = Weighting::Examples;
    // Batch 1: post batches are 1 and 3, one example each.
    assert_eq!(d.train(&DenseRows::new(&ROWS), &cfg, 0).unwrap().weight, 2);
}

/// A non-finite delta zeroes the update and gives it weight 0 (docs/SEMANTICS.md step 5, as TFF).
pub fn non_finite_update_has_zero_weight() {
    let mut d = device_with(&[(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0)]);
    let mut cfg = hand_config(2);
    cfg.post_lr = 3.0e38;
    let up = d.train(&DenseRows::new(&ROWS), &cfg, 0).unwrap();
    assert_eq!(up.weight, 0);
    assert_eq!(up.items, &[0, 2]);
    assert!(up.deltas.iter().flatten().all(|&x| x == 0.0));
}

/// Evaluation reconstructs on even batches and measures on odd ones, without training.
/// Batch 1: ex0 (item 0, y 4) and ex2 (item 2, y 3) reconstruct; ex1 (item 1, y 2) and ex3
/// (item 2, y 1) are measured. Recon: e = -4, c = 0.5, u = (2, 0); then y_hat(v2) = 2,
/// e = -1, g = (-1,-1), u = (2.5, 0.5). Measure: v1 -> 0.5, e = -1.5; v2 -> 3, e = 2.
/// Loss sum 2.25 + 4 = 6.25, |e| sum 3.5, none correct.
pub fn evaluate_uses_disjoint_halves() {
    let mut d = device_with(&[(0, 4.0), (1, 2.0), (2, 3.0), (2, 1.0)]);
    let cfg = hand_config(1);
    let rows = DenseRows::new(&ROWS);
    let m = d.evaluate(&rows, &cfg, 0).unwrap();
    assert_eq!(d.user(), &[2.5, 0.5]);
    // Q16.16 computes the same exact values.
    let mut q = device_of::<Q16>(&[(0, 4.0), (1, 2.0), (2, 3.0), (2, 1.0)]);
    let qrows = rows_of::<Q16>();
    assert_eq!(q.evaluate(&DenseRows::new(&qrows), &cfg, 0).unwrap(), m);
    // Q16.16 computes the same exact values.
    let mut q = device_of::<Q16>(&[(0, 4.0), (1, 2.0), (2, 3.0), (2, 1.0)]);
    let qrows = rows_of::<Q16>();
    assert_eq!(q.evaluate(&DenseRows::new(&qrows), &cfg, 0).unwrap(), m);
    assert_eq!(
        m,
        Metrics {
            loss_sum: 6.25,
            abs_err_sum: 3.5,
            correct: 0,
            count: 2
        }
    );
    // Ranking then excludes only the reconstruction half's items.
    assert_eq!(d.excluded(), &[0, 2]);
    let mut held_out = [(0u32, 0.0f32); 4];
    let mut n = 0;
    for (i, r) in d.phase_examples(&cfg, Phase::PostReconstruction) {
        held_out[n] = (i, r);
        n += 1;
    }
    assert_eq!(&held_out[..n], &[(1, 2.0), (2, 1.0)]);
    // Evaluation without a split would measure on reconstruction data: refused.
    let mut no_split = cfg;
    no_split.split.split_dataset = false;
    assert!(d.evaluate(&rows, &no_split, 0).is_err());
}

/// Same inputs and seed give the same bits; another seed gives another user embedding, drawn
/// in [-0.05, 0.05).
pub fn determinism_and_init_range() {
    let rows: [[f32; 2]; 3] = [[0.3, -0.2], [0.1, 0.7], [-0.4, 0.25]];
    let pairs = [(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0), (1, 1.0), (2, 4.5)];
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: 2,
            shuffle_seed: Some(42),
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    let view = DenseRows::new(&rows);
    let mut a = device_with(&pairs);
    let mut b = device_with(&pairs);
    let ua = a.train(&view, &cfg, 99).unwrap();
    let (ia, da, wa) = (ua.items.to_owned_array(), bits(ua.deltas), ua.weight);
    let ub = b.train(&view, &cfg, 99).unwrap();
    assert_eq!(ia, ub.items.to_owned_array());
    assert_eq!(da, bits(ub.deltas));
    assert_eq!(wa, ub.weight);

    let mut init = Device::<f32, 16, 2>::new();
    for &(i, r) in &pairs {
        init.data_mut().push(i, r, 3).unwrap();
    }
    let mut zero_lr = cfg;
    zero_lr.recon_lr = 0.0;
    init.train(&view, &zero_lr, 99).unwrap();
    let u99 = *init.user();
    init.train(&view, &zero_lr, 100).unwrap();
    assert_ne!(u99, *init.user());
    for &x in u99.iter().chain(init.user()) {
        assert!((-0.05..0.05).contains(&x), "init {x} outside [-0.05, 0.05)");
    }
}

trait ToOwnedArray {
    fn to_owned_array(&self) -> [u32; 8];
}
impl ToOwnedArray for [u32] {
    fn to_owned_array(&self) -> [u32; 8] {
        let mut out = [u32::MAX; 8];
        out[..self.len()].copy_from_slice(self);
        out
    }
}

fn bits(d: &[[f32; 2]]) -> [u32; 16] {
    let mut out = [0; 16];
    for (o, x) in out.iter_mut().zip(d.iter().flatten()) {
        *o = x.to_bits();
    }
    out
}

/// Top-k streams every unrated item through a bounded heap: highest score first, ties to the
/// smaller id, rated items excluded. u = (1, 0.5) after the hand-worked reconstruction.
pub fn top_k_ranks_unrated_items() {
    let mut d = device_with(&[(0, 4.0), (1, 2.0)]);
    let mut cfg = hand_config(2);
    cfg.split.split_dataset = false;
    // One batch (ex0, ex1): e = -4, -2, g = (-4, -2), c = 0.25: u = (1, 0.5).
    let rows: [[f32; 2]; 6] = [
        [1.0, 0.0],
        [0.0, 1.0],
        [1.0, 1.0],
        [0.0, 3.0],
        [1.5, 0.0],
        [-1.0, 0.0],
    ];
    let view = DenseRows::new(&rows);
    d.reconstruct(&view, &cfg, 0).unwrap();
    assert_eq!(d.user(), &[1.0, 0.5]);
    // Scores: item 2 -> 1.5, item 3 -> 1.5, item 4 -> 1.5, item 5 -> -1; items 0, 1 rated.
    let mut top = fedrecon_core::rank::TopK::<f32, 4>::new(2).unwrap();
    d.rank(&view, &cfg, &mut top).unwrap();
    assert_eq!(top.into_sorted().as_slice(), &[(2, 1.5), (3, 1.5)]);
    let mut all = fedrecon_core::rank::TopK::<f32, 4>::new(4).unwrap();
    d.rank(&view, &cfg, &mut all).unwrap();
    assert_eq!(
        all.into_sorted().as_slice(),
        &[(2, 1.5), (3, 1.5), (4, 1.5), (5, -1.0)]
    );
    // Streaming scores use the reconstruction's model terms: rated items are excluded, and an
    // unrated one scores as `rank` ranked it (item 2: 1.5).
    assert_eq!(d.score(0, &rows[0], 0.0), None);
    assert_eq!(d.score(2, &rows[2], 0.0), Some(1.5));
    // A fresh workspace has reconstructed nobody: nothing to score.
    assert_eq!(device_with(&[(0, 4.0)]).score(2, &rows[2], 0.0), None);
}

/// Reusing one workspace for a second client leaves nothing of the first behind.
pub fn workspace_reuse_is_clean() {
    let rows = DenseRows::new(&ROWS);
    let cfg = hand_config(2);
    let mut reused = device_with(&[(1, 1.0), (2, 5.0), (1, 3.0), (2, 2.0), (0, 1.0)]);
    reused.train(&rows, &cfg, 5).unwrap();
    reused.data_mut().clear();
    for (i, r) in [(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0)] {
        reused.data_mut().push(i, r, 3).unwrap();
    }
    let up = reused.train(&rows, &cfg, 7).unwrap();
    assert_eq!(up.items, &[0, 2]);
    assert_eq!(up.deltas, &[[2.0, 1.0], [0.75, 0.375]]);
    let _ = ClientData::<f32, 4>::new();
}

/// The f32 dot product's documented order (eight lanes by index mod 8, combined pairwise)
/// at K = 50, checked against the order written out by hand and against the bits the host
/// computes: a board must produce the same.
pub fn f32_dot_order_is_fixed() {
    let mut a = [0.0f32; 50];
    let mut b = [0.0f32; 50];
    for i in 0..50 {
        a[i] = core::hint::black_box((i as f32 * 0.37).sin_free() - 0.2);
        b[i] = core::hint::black_box(0.05 - i as f32 * 0.0031);
    }
    let mut lanes = [0.0f32; 8];
    for i in 0..50 {
        lanes[i % 8] += a[i] * b[i];
    }
    let by_hand = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    let got = <f32 as Scalar>::dot(&a, &b);
    assert_eq!(got.to_bits(), by_hand.to_bits());
    super::assert_f32_bits(got, DOT_BITS);
}

/// Bits of [`f32_dot_order_is_fixed`]'s product as computed on the host.
const DOT_BITS: u32 = 0xbe60_748d; // -0.2191946

/// A cheap deterministic wiggle without libm (keeps the case about the dot's order only).
trait SinFree {
    fn sin_free(self) -> f32;
}
impl SinFree for f32 {
    fn sin_free(self) -> f32 {
        let x = self % 3.0;
        x * (3.0 - x) * 0.25
    }
}
