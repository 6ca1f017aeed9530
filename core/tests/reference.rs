//! Property test: the device round against a straightforward f64 transcription of docs/SEMANTICS.md's
//! "One client's round", on random small clients and configs. The device must agree to
//! within f32 rounding, touch exactly the items of the post-reconstruction batches, and be
//! bit-for-bit deterministic.

use fedrecon_core::rng::DeviceRng;
use fedrecon_core::{DenseRows, Device, RoundConfig, SplitConfig};
use proptest::prelude::*;

const K: usize = 4;
const ITEMS: usize = 12;

struct RefUpdate {
    items: Vec<u32>,
    deltas: Vec<[f64; K]>,
    weight: u32,
    loss_sum: f64,
    count: u32,
}

/// docs/SEMANTICS.md steps 1–5 written out plainly in f64, no workspace tricks.
fn reference(rows: &[[f32; K]], data: &[(u32, f32)], cfg: &RoundConfig, seed: u64) -> RefUpdate {
    let s = &cfg.split;
    let kept = data
        .len()
        .min(s.max_examples.map_or(usize::MAX, usize::from));
    let mut order: Vec<u16> = (0..kept as u16).collect();
    if let Some(seed) = s.shuffle_seed {
        DeviceRng::new(seed).shuffle(&mut order);
    }
    let b = usize::from(s.batch_size);
    let batches: Vec<Vec<usize>> = order
        .chunks(b)
        .map(|c| c.iter().map(|&i| usize::from(i)).collect())
        .collect();
    let pick = |phase_odd: bool, epochs: u16, cap: Option<u16>| -> Vec<Vec<usize>> {
        let mine: Vec<&Vec<usize>> = batches
            .iter()
            .enumerate()
            .filter(|(i, _)| !s.split_dataset || (i % 2 == 1) == phase_odd)
            .map(|(_, b)| b)
            .collect();
        let mut out: Vec<Vec<usize>> = (0..epochs)
            .flat_map(|_| mine.iter().map(|b| (*b).clone()))
            .collect();
        if let Some(c) = cap {
            out.truncate(usize::from(c));
        }
        out
    };
    let recon = pick(false, s.recon_epochs, s.recon_steps_max);
    let post = pick(true, s.post_epochs, s.post_steps_max);

    let mut rng = DeviceRng::new(seed);
    let mut u = [0f64; K];
    for x in &mut u {
        x.clone_from(&f64::from(
            -cfg.init_scale + 2.0 * cfg.init_scale * rng.unit_f32(),
        ));
    }
    let dot = |a: &[f64; K], b: &[f64; K]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let row64 = |i: u32| rows[i as usize].map(f64::from);
    for batch in &recon {
        let mut g = [0f64; K];
        for &e in batch {
            let (item, y) = data[e];
            let v = row64(item);
            let err = dot(&u, &v) - f64::from(y);
            for k in 0..K {
                g[k] += 2.0 * err * v[k] / batch.len() as f64;
            }
        }
        for k in 0..K {
            u[k] -= f64::from(cfg.recon_lr) * g[k];
        }
    }
    let mut work: std::collections::BTreeMap<u32, [f64; K]> = Default::default();
    let (mut loss_sum, mut count, mut weight) = (0.0, 0, 0);
    for batch in &post {
        let errs: Vec<f64> = batch
            .iter()
            .map(|&e| {
                let (item, y) = data[e];
                let v = *work.entry(item).or_insert_with(|| row64(item));
                dot(&u, &v) - f64::from(y)
            })
            .collect();
        for (&e, err) in batch.iter().zip(&errs) {
            loss_sum += err * err;
            count += 1;
            weight += 1;
            let v = work.get_mut(&data[e].0).unwrap();
            for k in 0..K {
                v[k] -= f64::from(cfg.post_lr) * 2.0 * err * u[k] / batch.len() as f64;
            }
        }
    }
    let items: Vec<u32> = work.keys().copied().collect();
    let deltas = items
        .iter()
        .map(|&i| {
            let (w, r) = (work[&i], row64(i));
            core::array::from_fn(|k| w[k] - r[k])
        })
        .collect();
    RefUpdate {
        items,
        deltas,
        weight,
        loss_sum,
        count,
    }
}

/// Item rows, the client's (item, rating) pairs, the round config and the round seed.
type Case = (Vec<[f32; K]>, Vec<(u32, f32)>, RoundConfig, u64);

fn arb_case() -> impl Strategy<Value = Case> {
    let rows = prop::collection::vec(prop::array::uniform4(-0.5f32..0.5), ITEMS);
    let data = prop::collection::vec(
        (0..ITEMS as u32, (1u8..=10).prop_map(|r| f32::from(r) * 0.5)),
        2..40,
    );
    let split = (
        1u16..7,
        prop::option::of(2u16..40),
        prop::option::of(any::<u64>()),
        any::<bool>(),
        (1u16..4, prop::option::of(1u16..9)),
        (1u16..4, prop::option::of(1u16..9)),
    )
        .prop_map(
            |(batch_size, max_examples, shuffle_seed, split_dataset, (re, rs), (pe, ps))| {
                SplitConfig {
                    batch_size,
                    max_examples,
                    shuffle_seed,
                    split_dataset,
                    recon_epochs: re,
                    recon_steps_max: rs,
                    post_epochs: pe,
                    post_steps_max: ps,
                }
            },
        );
    (rows, data, split, 0.01f32..0.1, 0.01f32..0.1, any::<u64>()).prop_map(
        |(rows, data, split, rl, pl, seed)| {
            let cfg = RoundConfig {
                split,
                recon_lr: rl,
                post_lr: pl,
                ..RoundConfig::default()
            };
            (rows, data, cfg, seed)
        },
    )
}

// Learning rates stay in the stable range: in a diverging run f32 and f64 drift apart
// chaotically, which says nothing about the semantics.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn device_matches_f64_reference((rows, data, cfg, seed) in arb_case()) {
        let mut dev = Box::new(Device::<f32, 64, K>::new());
        for &(i, r) in &data {
            dev.data_mut().push(i, r, ITEMS as u32).unwrap();
        }
        let view = DenseRows::new(&rows);
        let want = reference(&rows, &data, &cfg, seed);
        match dev.train(&view, &cfg, seed) {
            Err(e) => {
                // Only an empty phase may refuse; the reference then has no post examples
                // or no reconstruction steps.
                prop_assert!(matches!(e, fedrecon_core::Error::EmptySplit { .. }), "{e}");
                return Ok(());
            }
            Ok(up) => {
                prop_assert_eq!(up.items, &want.items[..]);
                prop_assert_eq!(up.weight, want.weight);
                prop_assert_eq!(up.metrics.count, want.count);
                let tol = |x: f64| 1e-4 * (1.0 + x.abs());
                prop_assert!((f64::from(up.metrics.loss_sum) - want.loss_sum).abs() <= tol(want.loss_sum));
                for (got, exp) in up.deltas.iter().zip(&want.deltas) {
                    for k in 0..K {
                        prop_assert!((f64::from(got[k]) - exp[k]).abs() <= tol(exp[k]), "{got:?} vs {exp:?}");
                    }
                }
                let first: Vec<u32> = up.deltas.iter().flatten().map(|x| x.to_bits()).collect();
                let again = dev.train(&view, &cfg, seed).unwrap();
                let second: Vec<u32> = again.deltas.iter().flatten().map(|x| x.to_bits()).collect();
                prop_assert_eq!(first, second);
            }
        }
    }
}

/// The exact reconstruction's minimiser, written independently of the device: the
/// uncentred `(K + 1)`-dimensional normal equations `(X^T X / n + P) w = X^T r / n`
/// (`X` rows `[v_j, 1]`, `P` diagonal: `lambda + prior / n` on the embedding, `bias_l2 +
/// bias_prior / n` on the bias) solved by Gaussian elimination with partial pivoting in f64.
/// `mean` is the embedding's prior mean `c` (the penalty is on `|u - c|^2`, so the right-hand
/// side gains `(lambda + prior / n) c`).
fn exact_reference(
    rows: &[[f32; K]],
    recon: &[(u32, f32)],
    lambda: f64,
    user_bias: bool,
    [prior, bias_l2, bias_prior]: [f64; 3],
    mean: [f64; K],
) -> ([f64; K], f64) {
    let dim = if user_bias { K + 1 } else { K };
    let n = recon.len() as f64;
    let mut a = vec![vec![0f64; dim + 1]; dim];
    for &(item, y) in recon {
        let mut x: Vec<f64> = rows[item as usize].iter().map(|&v| f64::from(v)).collect();
        if user_bias {
            x.push(1.0);
        }
        for i in 0..dim {
            for j in 0..dim {
                a[i][j] += x[i] * x[j] / n;
            }
            a[i][dim] += x[i] * f64::from(y) / n;
        }
    }
    for (i, row) in a.iter_mut().enumerate().take(K) {
        row[i] += lambda + prior / n;
        row[dim] += (lambda + prior / n) * mean[i];
    }
    if user_bias {
        a[K][K] += bias_l2 + bias_prior / n;
    }
    for c in 0..dim {
        let p = (c..dim)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                    *x -= f * p;
                }
            }
        }
    }
    let w: Vec<f64> = (0..dim).map(|i| a[i][dim] / a[i][i]).collect();
    (
        core::array::from_fn(|k| w[k]),
        if user_bias { w[K] } else { 0.0 },
    )
}

/// Rows, the reconstruction half (first batch; the second is evaluated), lambda, user bias,
/// and `ExactPrior`'s `[user_prior, bias_l2, bias_prior]` (all zero: plain `Exact`).
type ExactCase = (Vec<[f32; K]>, Vec<(u32, f32)>, f32, bool, [f32; 3]);

fn arb_exact_case() -> impl Strategy<Value = ExactCase> {
    (
        prop::collection::vec(prop::array::uniform4(-1.0f32..1.0), ITEMS),
        prop::collection::vec(
            (0..ITEMS as u32, (1u8..=10).prop_map(|r| f32::from(r) * 0.5)),
            1..30,
        ),
        0.01f32..2.0,
        any::<bool>(),
        prop_oneof![
            Just([0.0; 3]),
            prop::array::uniform3(prop_oneof![Just(0.0f32), 0.0f32..4.0]),
        ],
    )
}

/// A device running exact reconstruction in scalar `S` on `case`; returns (u, b_u) in f64.
fn exact_device<S: fedrecon_core::Scalar>(case: &ExactCase) -> ([f64; K], f64) {
    let (rows, recon, lambda, user_bias, [user_prior, bias_l2, bias_prior]) = case;
    let srows: Vec<[S; K]> = rows.iter().map(|r| r.map(S::from_f32)).collect();
    let mut dev = Box::new(Device::<S, 64, K>::new());
    for &(i, r) in recon {
        dev.data_mut()
            .push(i, S::from_f32(r), ITEMS as u32)
            .unwrap();
    }
    // One held-out example after the reconstruction batch.
    dev.data_mut()
        .push(0, S::from_f32(3.0), ITEMS as u32)
        .unwrap();
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: recon.len() as u16,
            ..SplitConfig::default()
        },
        user_l2: *lambda,
        model: fedrecon_core::ModelConfig {
            user_bias: *user_bias,
            ..Default::default()
        },
        reconstruction: if [user_prior, bias_l2, bias_prior] == [&0.0; 3] {
            fedrecon_core::Reconstruction::Exact
        } else {
            fedrecon_core::Reconstruction::ExactPrior {
                user_prior: *user_prior,
                bias_l2: *bias_l2,
                bias_prior: *bias_prior,
            }
        },
        ..RoundConfig::default()
    };
    dev.evaluate(&DenseRows::new(&srows), &cfg, 0).unwrap();
    if let fedrecon_core::Reconstruction::Exact = cfg.reconstruction {
        // `ExactPrior` with every term zero is `Exact`, bit for bit.
        let mut again = Box::new(Device::<S, 64, K>::new());
        *again.data_mut() = dev.data().clone();
        let prior = RoundConfig {
            reconstruction: fedrecon_core::Reconstruction::ExactPrior {
                user_prior: 0.0,
                bias_l2: 0.0,
                bias_prior: 0.0,
            },
            ..cfg
        };
        again.evaluate(&DenseRows::new(&srows), &prior, 0).unwrap();
        assert_eq!(again.user(), dev.user());
        assert_eq!(again.user_bias(), dev.user_bias());
    }
    (
        dev.user().map(|x| f64::from(x.to_f32())),
        f64::from(dev.user_bias().to_f32()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// f32 agrees with the f64 reference to 1e-4 relative; Q16.16 to 1e-3 and Q3.12 to
    /// 1e-2 absolute plus relative (their rows and ratings are rounded to the scalar first,
    /// and lambda >= 0.01 bounds the condition number by 1 + 4 * |v|^2 / lambda <= 401).
    #[test]
    fn exact_matches_f64_reference(case in arb_exact_case()) {
        let (rows, recon, lambda, user_bias, priors) = &case;
        let priors = priors.map(f64::from);
        let (u, b) = exact_reference(rows, recon, f64::from(*lambda), *user_bias, priors, [0.0; K]);
        let scale = 1.0 + u.iter().fold(b.abs(), |m, x| m.max(x.abs()));
        for (name, (du, db), tol) in [
            ("f32", exact_device::<f32>(&case), 1e-4),
            ("Q16", exact_device::<fedrecon_core::Q16>(&case), 1e-3),
            ("Q12", exact_device::<fedrecon_core::Q12>(&case), 2e-2),
        ] {
            // Q3.12 saturates at +-8; only compare where the reference fits.
            if name == "Q12" && scale > 7.0 {
                continue;
            }
            for k in 0..K {
                prop_assert!((du[k] - u[k]).abs() <= tol * scale, "{name} u[{k}]: {du:?} vs {u:?}");
            }
            prop_assert!((db - b).abs() <= tol * scale, "{name} b: {db} vs {b}");
        }
    }
}

/// Item rows, implicit rows and the mean row (`2 * ITEMS + 1`), distinct reconstruction and
/// post-reconstruction items with their ratings (as many of each), lambda, user bias, priors.
type ImplicitCase = (
    Vec<[f32; K]>,
    Vec<(u32, f32)>,
    Vec<(u32, f32)>,
    f32,
    bool,
    [f32; 3],
);

fn arb_implicit_case() -> impl Strategy<Value = ImplicitCase> {
    let items: Vec<u32> = (0..ITEMS as u32).collect();
    let rating = (1u8..=10).prop_map(|r| f32::from(r) * 0.5);
    (1usize..=ITEMS / 2).prop_flat_map(move |n| {
        (
            prop::collection::vec(prop::array::uniform4(-1.0f32..1.0), 2 * ITEMS + 1),
            prop::sample::subsequence(items.clone(), n),
            prop::sample::subsequence(items.clone(), n),
            prop::collection::vec(rating.clone(), 2 * n),
            0.05f32..2.0,
            any::<bool>(),
            prop::array::uniform3(prop_oneof![Just(0.0f32), 0.0f32..4.0]),
        )
            .prop_map(|(rows, recon, post, ratings, lambda, bias, priors)| {
                let (r, p) = ratings.split_at(recon.len());
                let zip = |items: Vec<u32>, r: &[f32]| items.into_iter().zip(r.to_vec()).collect();
                (rows, zip(recon, r), zip(post, p), lambda, bias, priors)
            })
    })
}

/// The round of an implicit case: one batch per half of `half` examples.
fn implicit_config(
    case: &ImplicitCase,
    half: usize,
    implicit_lr: f32,
    both_halves: bool,
) -> RoundConfig {
    let (_, _, _, lambda, user_bias, [user_prior, bias_l2, bias_prior]) = case;
    RoundConfig {
        split: SplitConfig {
            batch_size: half as u16,
            ..SplitConfig::default()
        },
        user_l2: *lambda,
        model: fedrecon_core::ModelConfig {
            user_bias: *user_bias,
            ..Default::default()
        },
        reconstruction: fedrecon_core::Reconstruction::ExactImplicit {
            user_prior: *user_prior,
            bias_l2: *bias_l2,
            bias_prior: *bias_prior,
            items: ITEMS as u32,
            implicit_lr,
            both_halves,
        },
        ..RoundConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `ExactImplicit`'s training round, against an f64 transcription: the embedding solves
    /// the ridge system around the prior mean `c = m + n^(-1/2) sum y_j`, the update lists the
    /// trained items, then the reconstruction items' implicit rows, then the mean row, and the
    /// mean row's delta is `-post_lr` times the post loss's gradient in `c` (central
    /// differences of the f64 solve), each implicit row's `implicit_lr * n^(-1/2)` times it.
    #[test]
    fn implicit_step_is_the_post_loss_gradient(case in arb_implicit_case()) {
        let (rows, recon, post, lambda, user_bias, [user_prior, bias_l2, bias_prior]) = &case;
        let n = recon.len();
        let implicit_lr = 0.3f32;
        let cfg = implicit_config(&case, n, implicit_lr, false);
        let mut dev = Box::new(Device::<f32, 64, K>::new());
        for &(i, r) in recon.iter().chain(post) {
            dev.data_mut().push(i, r, ITEMS as u32).unwrap();
        }
        let update = dev.train(&DenseRows::new(rows), &cfg, 0).unwrap();

        // The f64 reference: prior mean, solve, post loss (one batch: its mean squared error).
        let scale = 1.0 / (n as f64).sqrt();
        let prior_mean = |shift: [f64; K]| -> [f64; K] {
            core::array::from_fn(|k| {
                let sum: f64 = recon.iter().map(|&(i, _)| f64::from(rows[ITEMS + i as usize][k])).sum();
                f64::from(rows[2 * ITEMS][k]) + scale * sum + shift[k]
            })
        };
        let priors = [*user_prior, *bias_l2, *bias_prior].map(f64::from);
        let loss = |c: [f64; K]| {
            let (u, b) = exact_reference(rows, recon, f64::from(*lambda), *user_bias, priors, c);
            post.iter().map(|&(i, y)| {
                let v = rows[i as usize];
                let e = (0..K).map(|k| u[k] * f64::from(v[k])).sum::<f64>() + b - f64::from(y);
                e * e
            }).sum::<f64>() / n as f64
        };
        let c = prior_mean([0.0; K]);
        let h = 1e-5;
        let step: [f64; K] = core::array::from_fn(|k| {
            let mut up = c;
            let mut down = c;
            up[k] += h;
            down[k] -= h;
            -f64::from(cfg.post_lr) * (loss(up) - loss(down)) / (2.0 * h)
        });

        let mut want: Vec<u32> = post.iter().map(|&(i, _)| i).collect();
        want.sort_unstable();
        let mut implicit: Vec<u32> = recon.iter().map(|&(i, _)| ITEMS as u32 + i).collect();
        implicit.sort_unstable();
        want.extend(implicit);
        want.push(2 * ITEMS as u32);
        prop_assert_eq!(update.items, &want[..]);
        prop_assert_eq!(update.weight, n as u32);
        let size = step.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let tol = 2e-3 * size;
        let mean_delta = update.deltas.last().unwrap();
        for k in 0..K {
            prop_assert!((f64::from(mean_delta[k]) - step[k]).abs() <= tol,
                "mean row: {mean_delta:?} vs {step:?}");
        }
        for delta in &update.deltas[n..want.len() - 1] {
            for k in 0..K {
                let expect = f64::from(implicit_lr) * scale * step[k];
                prop_assert!((f64::from(delta[k]) - expect).abs() <= tol,
                    "implicit row: {delta:?} vs {expect}");
            }
        }
        prop_assert!(update.bias_deltas.is_none());
        let (u, _) = exact_reference(rows, recon, f64::from(*lambda), *user_bias, priors, c);
        let size = u.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for k in 0..K {
            prop_assert!((f64::from(dev.user()[k]) - u[k]).abs() <= 1e-4 * size,
                "user: {:?} vs {u:?}", dev.user());
        }
    }
}

/// With every implicit row and the mean row zero, `ExactImplicit` reconstructs exactly as
/// `ExactPrior` (the prior mean is zero), and refuses a matrix without its extra rows.
#[test]
fn zero_implicit_rows_reconstruct_as_exact_prior() {
    let mut rows = vec![[0.0f32; K]; 2 * ITEMS + 1];
    for (i, row) in rows.iter_mut().take(ITEMS).enumerate() {
        *row = core::array::from_fn(|k| ((i * 7 + k * 3) % 11) as f32 / 11.0 - 0.5);
    }
    let prior = fedrecon_core::Reconstruction::ExactPrior {
        user_prior: 2.0,
        bias_l2: 0.1,
        bias_prior: 1.0,
    };
    let implicit = fedrecon_core::Reconstruction::ExactImplicit {
        user_prior: 2.0,
        bias_l2: 0.1,
        bias_prior: 1.0,
        items: ITEMS as u32,
        implicit_lr: 0.2,
        both_halves: true,
    };
    let cfg = |reconstruction| RoundConfig {
        split: SplitConfig {
            batch_size: 3,
            ..SplitConfig::default()
        },
        user_l2: 0.05,
        model: fedrecon_core::ModelConfig {
            user_bias: true,
            ..Default::default()
        },
        reconstruction,
        ..RoundConfig::default()
    };
    let run = |reconstruction, rows: &[[f32; K]]| {
        let mut dev = Box::new(Device::<f32, 64, K>::new());
        for (j, item) in [3u32, 5, 8, 1, 0, 11, 7, 2, 9].into_iter().enumerate() {
            dev.data_mut()
                .push(item, 1.0 + (j % 5) as f32, ITEMS as u32)
                .unwrap();
        }
        let metrics = dev.evaluate(&DenseRows::new(rows), &cfg(reconstruction), 0);
        metrics.map(|m| (m, *dev.user(), dev.user_bias()))
    };
    let (m_prior, u_prior, b_prior) = run(prior, &rows[..ITEMS]).unwrap();
    let (m_impl, u_impl, b_impl) = run(implicit, &rows).unwrap();
    assert_eq!(u_impl, u_prior);
    assert_eq!(b_impl, b_prior);
    assert_eq!(m_impl, m_prior);
    assert_eq!(
        run(implicit, &rows[..ITEMS]).unwrap_err(),
        fedrecon_core::Error::InvalidConfig {
            what: "implicit feedback needs 2 * items + 1 rows (items, implicit rows, mean row)"
        }
    );
}

/// The f64 reference of one pass of an `ExactImplicit` round that reconstructs on `recon` and
/// trains on `post` (one batch): the reconstructed `(u, b_u)` and the mean row's step
/// `-post_lr * dL/dc` (central differences of the solve).
fn implicit_pass(
    case: &ImplicitCase,
    recon: &[(u32, f32)],
    post: &[(u32, f32)],
    post_lr: f64,
) -> ([f64; K], f64, [f64; K]) {
    let (rows, _, _, lambda, user_bias, priors) = case;
    let priors = priors.map(f64::from);
    let scale = 1.0 / (recon.len() as f64).sqrt();
    let c: [f64; K] = core::array::from_fn(|k| {
        let sum: f64 = recon
            .iter()
            .map(|&(i, _)| f64::from(rows[ITEMS + i as usize][k]))
            .sum();
        f64::from(rows[2 * ITEMS][k]) + scale * sum
    });
    let solve =
        |c: [f64; K]| exact_reference(rows, recon, f64::from(*lambda), *user_bias, priors, c);
    let loss = |c: [f64; K]| {
        let (u, b) = solve(c);
        post.iter()
            .map(|&(i, y)| {
                let v = rows[i as usize];
                let e = (0..K).map(|k| u[k] * f64::from(v[k])).sum::<f64>() + b - f64::from(y);
                e * e
            })
            .sum::<f64>()
            / post.len() as f64
    };
    let h = 1e-5;
    let step = core::array::from_fn(|k| {
        let (mut up, mut down) = (c, c);
        up[k] += h;
        down[k] -= h;
        -post_lr * (loss(up) - loss(down)) / (2.0 * h)
    });
    let (u, b) = solve(c);
    (u, b, step)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `both_halves`: the update holds every rated item's row (the post half's trained by the
    /// first pass's user, the reconstruction half's by the second's), then every rated item's
    /// implicit row with the step of the pass that reconstructed from it, then the mean row
    /// with both passes' steps; the weight counts both halves.
    #[test]
    fn both_halves_trains_every_rating(case in arb_implicit_case()) {
        let (rows, recon, post, ..) = &case;
        // Disjoint halves, as a user's ratings are.
        let post: Vec<(u32, f32)> =
            post.iter().copied().filter(|(i, _)| !recon.iter().any(|(j, _)| j == i)).collect();
        prop_assume!(!post.is_empty());
        let n = recon.len();
        let implicit_lr = 0.3f32;
        let cfg = implicit_config(&case, n, implicit_lr, true);
        let mut dev = Box::new(Device::<f32, 64, K>::new());
        for &(i, r) in recon.iter().chain(&post) {
            dev.data_mut().push(i, r, ITEMS as u32).unwrap();
        }
        let update = dev.train(&DenseRows::new(rows), &cfg, 0).unwrap();
        let lr = f64::from(cfg.post_lr);
        let (u_a, b_a, step_a) = implicit_pass(&case, recon, &post, lr);
        let (u_b, b_b, step_b) = implicit_pass(&case, &post, recon, lr);

        let mut items: Vec<u32> = recon.iter().chain(&post).map(|&(i, _)| i).collect();
        items.sort_unstable();
        let m = items.len();
        let mut want = items.clone();
        want.extend(items.iter().map(|&i| ITEMS as u32 + i));
        want.push(2 * ITEMS as u32);
        prop_assert_eq!(update.items, &want[..]);
        prop_assert_eq!(update.weight, (n + post.len()) as u32);
        let size = step_a.iter().chain(&step_b).fold(1.0f64, |m, x| m.max(x.abs()));
        let tol = 2e-3 * size;
        let mean = update.deltas[2 * m];
        for k in 0..K {
            prop_assert!((f64::from(mean[k]) - (step_a[k] + step_b[k])).abs() <= tol,
                "mean row {mean:?} vs {step_a:?} + {step_b:?}");
        }
        let scale = |half: usize| f64::from(implicit_lr) / (half as f64).sqrt();
        for (s, &item) in items.iter().enumerate() {
            let in_recon = recon.iter().any(|&(i, _)| i == item);
            let (step, sc) = if in_recon { (step_a, scale(n)) } else { (step_b, scale(post.len())) };
            let delta = update.deltas[m + s];
            for k in 0..K {
                prop_assert!((f64::from(delta[k]) - sc * step[k]).abs() <= tol,
                    "implicit row of {item}: {delta:?} vs {sc} * {step:?}");
            }
            // The item row: one SGD step of its half's batch, with the user of the pass that
            // trained it (the other half's reconstruction).
            let (u, b, half, y) = if in_recon {
                (u_b, b_b, n, recon.iter().find(|p| p.0 == item).unwrap().1)
            } else {
                (u_a, b_a, post.len(), post.iter().find(|p| p.0 == item).unwrap().1)
            };
            let v = rows[item as usize];
            let e = (0..K).map(|k| u[k] * f64::from(v[k])).sum::<f64>() + b - f64::from(y);
            let row = update.deltas[s];
            let usize_ = u.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for k in 0..K {
                let expect = -2.0 * lr / half as f64 * e * u[k];
                prop_assert!((f64::from(row[k]) - expect).abs() <= 1e-3 * usize_ * (1.0 + e.abs()),
                    "row of {item}: {row:?}, want {expect} at {k}");
            }
        }
    }
}
