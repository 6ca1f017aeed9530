//! The dataset pipeline of docs/SEMANTICS.md ("One client's round" 1–2): batches index the examples in
//! order; even batches reconstruct and odd ones train; epochs repeat, then `steps_max` caps
//! across epochs.

use fedrecon_core::{Phase, SplitConfig};

const MAXB: usize = 16;

/// Collects a schedule's batches as (start, end) pairs.
fn batches(cfg: &SplitConfig, phase: Phase, kept: usize) -> ([(usize, usize); MAXB], usize) {
    let mut out = [(0, 0); MAXB];
    let mut n = 0;
    for r in cfg.schedule(phase, kept) {
        out[n] = (r.start, r.end);
        n += 1;
    }
    (out, n)
}

/// 7 examples in batches of 2 make 4 batches, the last one short: reconstruction gets batches
/// 0 and 2, post-reconstruction 1 and 3 (the short one).
pub fn odd_batch_count_and_short_last_batch() {
    let cfg = SplitConfig {
        batch_size: 2,
        ..SplitConfig::default()
    };
    let (r, n) = batches(&cfg, Phase::Reconstruction, 7);
    assert_eq!(&r[..n], &[(0, 2), (4, 6)]);
    let (p, n) = batches(&cfg, Phase::PostReconstruction, 7);
    assert_eq!(&p[..n], &[(2, 4), (6, 7)]);
    assert_eq!(cfg.schedule(Phase::PostReconstruction, 7).examples(), 3);
    // 5 batches (9 examples): reconstruction gets the extra one.
    assert_eq!(cfg.schedule(Phase::Reconstruction, 9).steps(), 3);
    assert_eq!(cfg.schedule(Phase::PostReconstruction, 9).steps(), 2);
}

/// Without `split_dataset` both phases see every batch (TFF's `split_dataset=False`).
pub fn reuse_gives_both_phases_every_batch() {
    let cfg = SplitConfig {
        batch_size: 3,
        split_dataset: false,
        ..SplitConfig::default()
    };
    for phase in [Phase::Reconstruction, Phase::PostReconstruction] {
        let (b, n) = batches(&cfg, phase, 7);
        assert_eq!(&b[..n], &[(0, 3), (3, 6), (6, 7)]);
    }
}

/// Epochs repeat the phase's batches, and the step cap counts across epochs:
/// 3 epochs of reconstruction batches {0, 2} capped at 5 steps = 0, 2, 0, 2, 0.
pub fn epochs_then_cap_across_epochs() {
    let cfg = SplitConfig {
        batch_size: 2,
        recon_epochs: 3,
        recon_steps_max: Some(5),
        post_epochs: 2,
        post_steps_max: Some(50),
        ..SplitConfig::default()
    };
    let (r, n) = batches(&cfg, Phase::Reconstruction, 8);
    assert_eq!(&r[..n], &[(0, 2), (4, 6), (0, 2), (4, 6), (0, 2)]);
    // Post: 2 epochs of {1, 3}; the cap of 50 does not bind.
    let (p, n) = batches(&cfg, Phase::PostReconstruction, 8);
    assert_eq!(&p[..n], &[(2, 4), (6, 8), (2, 4), (6, 8)]);
    assert_eq!(cfg.schedule(Phase::PostReconstruction, 8).examples(), 8);
}

/// The cap keeps the first examples in stored order, then the seeded shuffle permutes only
/// those (the tutorial's `take(300).shuffle(seed=42)`); the same seed gives the same order.
pub fn cap_before_seeded_shuffle() {
    let cfg = SplitConfig {
        batch_size: 2,
        max_examples: Some(6),
        shuffle_seed: Some(42),
        ..SplitConfig::default()
    };
    let mut a = [0u16; 10];
    let mut b = [0u16; 10];
    assert_eq!(cfg.order(10, &mut a), 6);
    assert_eq!(cfg.order(10, &mut b), 6);
    assert_eq!(a, b);
    let mut seen = [false; 6];
    for &i in &a[..6] {
        seen[usize::from(i)] = true;
    }
    assert!(
        seen.iter().all(|&s| s),
        "not a permutation of the first 6: {a:?}"
    );
    assert_ne!(
        &a[..6],
        &[0, 1, 2, 3, 4, 5],
        "seed 42 should move something"
    );
    let other = SplitConfig {
        shuffle_seed: Some(43),
        ..cfg
    };
    let mut c = [0u16; 10];
    other.order(10, &mut c);
    assert_ne!(a, c);
    // No shuffle: identity order, and no cap keeps everything.
    let plain = SplitConfig::default();
    let mut d = [9u16; 4];
    assert_eq!(plain.order(4, &mut d), 4);
    assert_eq!(d, [0, 1, 2, 3]);
}

/// A client with a single batch has nothing to train on when split: the schedule is empty.
pub fn single_batch_leaves_post_empty() {
    let cfg = SplitConfig {
        batch_size: 5,
        ..SplitConfig::default()
    };
    assert_eq!(cfg.schedule(Phase::Reconstruction, 4).steps(), 1);
    assert_eq!(cfg.schedule(Phase::PostReconstruction, 4).steps(), 0);
    assert!(
        cfg.schedule(Phase::PostReconstruction, 4)
            .require_nonempty(Phase::PostReconstruction)
            .is_err()
    );
    assert_eq!(cfg.schedule(Phase::Reconstruction, 0).steps(), 0);
}
