//! Exact reconstruction (the ridge solve of `fedrecon_core::ridge`): hand-worked solves in
//! every scalar, the regulariser's guarantee on rank-deficient data, and the typed refusal
//! when the regulariser is too small to keep the system solvable.

use fedrecon_core::ridge::{R20, RidgeNum, solve_ldlt};
use fedrecon_core::{
    DenseRows, Device, Error, ModelConfig, Q12, Q16, Reconstruction, RoundConfig, Scalar,
    SplitConfig,
};

/// Rows of the K=2 cases: v0 = (1, 0), v1 = (0, 1), v2 = (1, 1).
const ROWS: [[f32; 2]; 3] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];

/// Batch 4, split halves: examples 0..4 reconstruct, 4..8 train or evaluate.
fn exact_config(user_l2: f32, user_bias: bool) -> RoundConfig {
    RoundConfig {
        split: SplitConfig {
            batch_size: 4,
            ..SplitConfig::default()
        },
        post_lr: 0.5,
        user_l2,
        model: ModelConfig {
            user_bias,
            ..ModelConfig::default()
        },
        reconstruction: Reconstruction::Exact,
        ..RoundConfig::default()
    }
}

fn device_of<S: Scalar>(pairs: &[(u32, f32)]) -> Device<S, 16, 2> {
    let mut d = Device::new();
    for &(i, r) in pairs {
        d.data_mut().push(i, S::from_f32(r), 3).unwrap();
    }
    d
}

fn rows_of<S: Scalar>() -> [[S; 2]; 3] {
    ROWS.map(|r| r.map(S::from_f32))
}

fn close(got: f32, want: f32, tol: f32, what: &str) {
    assert!(
        libm::fabsf(got - want) <= tol,
        "{what}: got {got}, expected {want} within {tol}"
    );
}

/// No bias, lambda = 1/4. Reconstruction half: (item 0, y 4), (item 1, y 2), (item 2, y 3)
/// twice, so n = 4, G = mean(v v^T) = [[3, 2], [2, 3]] / 4, A = G + I/4 = [[1, 1/2], [1/2, 1]],
/// g = mean(v y) = (4 + 3 + 3, 2 + 3 + 3) / 4 = (5/2, 2). A u = g gives u = (2, 1):
/// (2 + 1/2, 1 + 1) = (5/2, 2). LDL^T: d0 = 1, l10 = 1/2, d1 = 3/4.
/// Post half: (0, 5), (1, 1), (2, 3), (0, 2); predictions 2, 1, 3, 2, errors -3, 0, 0, 0:
/// loss sum 9, |e| sum 3, 3 correct. c = 2 * 0.5 / 4 = 1/4; v0 moves by -(1/4)(-3) u =
/// (3/2, 3/4); v1 and v2 are touched with zero error, so their deltas are zero.
pub fn hand_worked_exact_k2() {
    hand_worked_exact_in::<f32>(0.0);
}

/// [`hand_worked_exact_k2`] in Q16.16 (its ridge type is Q31.32).
pub fn hand_worked_exact_k2_q16() {
    hand_worked_exact_in::<Q16>(Q16::from_bits(1).to_f32());
}

/// [`hand_worked_exact_k2`] in Q3.12 (its ridge type is Q11.20).
pub fn hand_worked_exact_k2_q12() {
    hand_worked_exact_in::<Q12>(Q12::from_bits(1).to_f32());
}

const NO_BIAS_DATA: [(u32, f32); 8] = [
    (0, 4.0),
    (1, 2.0),
    (2, 3.0),
    (2, 3.0),
    (0, 5.0),
    (1, 1.0),
    (2, 3.0),
    (0, 2.0),
];

fn hand_worked_exact_in<S: Scalar>(ulp: f32) {
    let rows = rows_of::<S>();
    let cfg = exact_config(0.25, false);
    let mut d = device_of::<S>(&NO_BIAS_DATA);
    let m = d.evaluate(&DenseRows::new(&rows), &cfg, 1).unwrap();
    close(d.user()[0].to_f32(), 2.0, ulp, "u0");
    close(d.user()[1].to_f32(), 1.0, ulp, "u1");
    close(m.loss_sum, 9.0, 8.0 * ulp, "loss sum");
    assert_eq!((m.correct, m.count), (3, 4));

    let up = d.train(&DenseRows::new(&rows), &cfg, 1).unwrap();
    assert_eq!(up.items, &[0, 1, 2]);
    close(up.deltas[0][0].to_f32(), 1.5, 4.0 * ulp, "delta v0[0]");
    close(up.deltas[0][1].to_f32(), 0.75, 4.0 * ulp, "delta v0[1]");
    assert_eq!(up.deltas[1], [S::ZERO; 2]);
    assert_eq!(up.deltas[2], [S::ZERO; 2]);
    assert_eq!(up.weight, 4);
    // The seed only drives SGD's random start: exact reconstruction ignores it.
    let first = *d.user();
    d.train(&DenseRows::new(&rows), &cfg, 99).unwrap();
    assert_eq!(d.user(), &first);
}

/// With a user bias (unregularised), lambda = 1/4. Reconstruction half as in
/// [`hand_worked_exact_k2`]: m = mean(v) = (3/4, 3/4), mean(r) = 3; centred rows d = v - m are
/// (1/4, -3/4), (-3/4, 1/4), (1/4, 1/4) twice, t = r - 3 = (1, -1, 0, 0).
/// C = mean(d d^T) = [[3, -1], [-1, 3]] / 16, A = C + I/4 = [[7, -1], [-1, 7]] / 16,
/// c = mean(d t) = (1/4 + 3/4, -3/4 - 1/4) / 4 = (1/4, -1/4). A u = c gives u = (1/2, -1/2)
/// ((7/2 + 1/2) / 16 = 1/4), b_u = mean(r) - m.u = 3 - 0 = 3.
/// Post half (0, 5), (1, 1), (2, 3), (2, 4): predictions 3.5, 2.5, 3, 3; errors -1.5, 1.5, 0,
/// -1: loss sum 5.5, one correct.
pub fn hand_worked_exact_bias() {
    let bits = hand_worked_exact_bias_in::<f32>(2e-7);
    // Host and Cortex-M4F must agree bit for bit (pattern from a host run).
    let [u0, u1, bu] = bits;
    super::assert_f32_bits(u0, 0x3f00_0000);
    super::assert_f32_bits(u1, 0xbf00_0000);
    super::assert_f32_bits(bu, 0x4040_0000);
}

/// [`hand_worked_exact_bias`] in Q16.16.
pub fn hand_worked_exact_bias_q16() {
    hand_worked_exact_bias_in::<Q16>(Q16::from_bits(1).to_f32());
}

/// [`hand_worked_exact_bias`] in Q3.12.
pub fn hand_worked_exact_bias_q12() {
    hand_worked_exact_bias_in::<Q12>(Q12::from_bits(1).to_f32());
}

fn hand_worked_exact_bias_in<S: Scalar>(ulp: f32) -> [f32; 3] {
    let rows = rows_of::<S>();
    let cfg = exact_config(0.25, true);
    let mut d = device_of::<S>(&[
        (0, 4.0),
        (1, 2.0),
        (2, 3.0),
        (2, 3.0),
        (0, 5.0),
        (1, 1.0),
        (2, 3.0),
        (2, 4.0),
    ]);
    let m = d.evaluate(&DenseRows::new(&rows), &cfg, 1).unwrap();
    let (u0, u1, bu) = (
        d.user()[0].to_f32(),
        d.user()[1].to_f32(),
        d.user_bias().to_f32(),
    );
    close(u0, 0.5, ulp, "u0");
    close(u1, -0.5, ulp, "u1");
    close(bu, 3.0, ulp, "b_u");
    close(m.loss_sum, 5.5, 12.0 * ulp, "loss sum");
    assert_eq!((m.correct, m.count), (1, 4));
    [u0, u1, bu]
}

/// Every example rates item 2 (row (1, 1)): the Gram matrix [[1, 1], [1, 1]] has rank 1, so
/// without the regulariser the system is singular. With lambda = 1/2 every pivot is at least
/// lambda (d0 = 3/2, d1 = 3/2 - 1/(3/2) = 5/6) and the solution is the ridge one:
/// (G + I/2) u = mean(v y) = (3, 3) gives u = (6/5, 6/5) in every scalar.
pub fn rank_deficient_is_solved_by_the_regulariser() {
    let data = [(2, 3.0), (2, 3.0), (2, 3.0), (2, 3.0), (0, 1.0)];
    rank_deficient_in::<f32>(&data, 1e-6);
    rank_deficient_in::<Q16>(&data, 1e-4);
    rank_deficient_in::<Q12>(&data, 5e-4);
}

fn rank_deficient_in<S: Scalar>(data: &[(u32, f32)], tol: f32) {
    let rows = rows_of::<S>();
    let mut d = device_of::<S>(data);
    d.evaluate(&DenseRows::new(&rows), &exact_config(0.5, false), 0)
        .unwrap();
    close(d.user()[0].to_f32(), 1.2, tol, "u0");
    close(d.user()[1].to_f32(), 1.2, tol, "u1");
}

/// The same rank-1 data with a regulariser the scalar cannot hold: in f32, 1 + 1e-9 rounds to
/// 1, so the second pivot is 0; in Q3.12 (ridge type Q11.20, resolution 9.5e-7) 1e-7 rounds
/// to 0. Both are refused with the column, never returned as an embedding; and an exact
/// config without any regulariser is refused up front.
pub fn singular_system_is_refused() {
    let data = [(2, 3.0), (2, 3.0), (2, 3.0), (2, 3.0), (0, 1.0)];
    let rows = rows_of::<f32>();
    let mut d = device_of::<f32>(&data);
    assert_eq!(
        d.evaluate(&DenseRows::new(&rows), &exact_config(1e-9, false), 0),
        Err(Error::IllConditioned { column: 1 })
    );
    let qrows = rows_of::<Q12>();
    let mut q = device_of::<Q12>(&data);
    assert_eq!(
        q.train(&DenseRows::new(&qrows), &exact_config(1e-7, false), 0)
            .map(|u| u.weight),
        Err(Error::IllConditioned { column: 1 })
    );
    assert!(matches!(
        d.evaluate(&DenseRows::new(&rows), &exact_config(0.0, false), 0),
        Err(Error::InvalidConfig { .. })
    ));
    // A NaN row is refused too (SGD would have produced a NaN update of weight 0).
    let nan_rows = [[f32::NAN, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let mut d = device_of::<f32>(&[(0, 3.0), (1, 3.0), (2, 3.0), (2, 3.0), (0, 1.0)]);
    assert_eq!(
        d.evaluate(&DenseRows::new(&nan_rows), &exact_config(0.5, false), 0),
        Err(Error::IllConditioned { column: 0 })
    );
}

/// The solver alone on a 3x3 system worked by hand: A = [[4, 2, 0], [2, 5, 2], [0, 2, 5]]
/// (only the lower triangle is read; the upper holds garbage), b = A (1, -1, 2) = (2, 1, 8).
/// LDL^T: d0 = 4, l10 = 1/2, d1 = 4, l21 = 1/2, d2 = 4.
pub fn ldlt_solves_a_hand_worked_system() {
    let mut a = [[4.0f32, 99.0, 99.0], [2.0, 5.0, 99.0], [0.0, 2.0, 5.0]];
    let mut b = [2.0f32, 1.0, 8.0];
    solve_ldlt(&mut a, &mut b, 0.5).unwrap();
    assert_eq!(b, [1.0, -1.0, 2.0]);
    assert_eq!([a[0][0], a[1][1], a[2][2]], [4.0, 4.0, 4.0]);
    assert_eq!([a[1][0], a[2][1]], [0.5, 0.5]);
    // The same in Q11.20: every value is a multiple of 2^-20, so the solve is exact.
    let f = R20::from_f32;
    let mut a = [
        [f(4.0), f(0.0), f(0.0)],
        [f(2.0), f(5.0), f(0.0)],
        [f(0.0), f(2.0), f(5.0)],
    ];
    let mut b = [f(2.0), f(1.0), f(8.0)];
    solve_ldlt(&mut a, &mut b, f(0.5)).unwrap();
    assert_eq!(b, [f(1.0), f(-1.0), f(2.0)]);
    // A pivot below the guard names its column.
    let mut a = [[1.0f32, 0.0], [1.0, 1.0]];
    let mut b = [1.0f32, 1.0];
    assert_eq!(
        solve_ldlt(&mut a, &mut b, 0.25),
        Err(Error::IllConditioned { column: 1 })
    );
}

/// Exact reconstruction for recommending: `reconstruct` uses every rating when the split is
/// off, and ranking excludes them.
pub fn exact_reconstruct_for_ranking() {
    let rows = rows_of::<f32>();
    let mut d = device_of::<f32>(&NO_BIAS_DATA[..4]);
    let cfg = RoundConfig {
        split: SplitConfig {
            split_dataset: false,
            ..exact_config(0.25, false).split
        },
        ..exact_config(0.25, false)
    };
    d.reconstruct(&DenseRows::new(&rows), &cfg, 0).unwrap();
    assert_eq!(d.user(), &[2.0, 1.0]);
    assert_eq!(d.excluded(), &[0, 1, 2]);
}
