//! Exact reconstruction (the ridge solve of `fedrecon_core::ridge`): hand-worked solves in
//! every scalar, the regulariser's guarantee on rank-deficient data, and the typed refusal
//! when the regulariser is too small to keep the system solvable.

use fedrecon_core::ridge::{R20, R22, RidgeNum, solve_ldlt};
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

/// [`hand_worked_exact_k2`] in Q16.16 (its ridge type is Q9.22, summed exactly).
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
    // And in Q9.22, Q16.16's ridge type.
    let g = R22::from_f32;
    let mut a = [
        [g(4.0), g(0.0), g(0.0)],
        [g(2.0), g(5.0), g(0.0)],
        [g(0.0), g(2.0), g(5.0)],
    ];
    let mut b = [g(2.0), g(1.0), g(8.0)];
    solve_ldlt(&mut a, &mut b, g(0.5)).unwrap();
    assert_eq!(b, [g(1.0), g(-1.0), g(2.0)]);
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

/// Q9.22 rounds an inner product once: four products of `2^-12 * 2^-12 = 2^-24` (a quarter
/// of its resolution) each round to zero alone, but their exact sum is one unit, `2^-22`.
/// Q11.20, which rounds every operation, keeps the old behaviour.
pub fn q22_inner_products_round_once() {
    let x = R22::from_bits(1 << 10);
    let pairs = [(x, x); 4];
    assert_eq!(x * x, R22::ZERO);
    assert_eq!(
        R22::sum_products::<false>(R22::ZERO, pairs.iter().copied()),
        Some(R22::from_bits(1))
    );
    assert_eq!(
        R22::sum_products::<true>(R22::from_bits(1), pairs.iter().copied()),
        Some(R22::ZERO)
    );
    let y = R20::from_bits(1 << 9);
    assert_eq!(
        R20::sum_products::<false>(R20::ZERO, [(y, y); 4].iter().copied()),
        Some(R20::ZERO)
    );
    // Beyond the range (±512) is `None`, never a saturated value.
    let big = R22::from_f32(300.0);
    assert_eq!(
        R22::sum_products::<false>(big, [(big, R22::from_f32(1.0))].iter().copied()),
        None
    );
    assert_eq!(big.checked_add(big), None);
    assert_eq!(big.checked_mul(R22::from_f32(2.0)), None);
    assert_eq!(R22::from_f32(1.0 / 1024.0).checked_recip(), None);
    assert_eq!(
        R22::from_f32(0.25).checked_recip(),
        Some(R22::from_f32(4.0))
    );
}

/// Q16.16 values its Q9.22 solve cannot hold are refused with the value and the column, not
/// saturated into an embedding: a row entry of 200 (Q16.16 holds it; the exact sums accept
/// entries below 128), a row entry of 50 (accepted, but `G[0][0] = (2500 + 2) / 4` is beyond
/// Q9.22's ±512), and a regulariser of 0.0005 on the rank-one data of
/// [`rank_deficient_is_solved_by_the_regulariser`], whose second pivot (about `2 lambda`) has
/// a reciprocal of about 1000, beyond ±512 (Q3.12's Q11.20 holds it: solved there); and a
/// regulariser of 1000.
pub fn q16_out_of_range_is_refused() {
    let data = [(2, 3.0), (2, 3.0), (2, 3.0), (2, 3.0), (0, 1.0)];
    let extreme = |v: f32| [[v, 0.0], [0.0, 1.0], [1.0, 1.0]].map(|r| r.map(Q16::from_f32));
    let mut d = device_of::<Q16>(&[(0, 3.0), (1, 3.0), (2, 3.0), (2, 3.0), (0, 1.0)]);
    let rows = extreme(200.0);
    assert_eq!(
        d.evaluate(&DenseRows::new(&rows), &exact_config(0.5, false), 0),
        Err(Error::RidgeOutOfRange {
            what: "item row",
            column: 0
        })
    );
    let rows = extreme(50.0);
    assert_eq!(
        d.evaluate(&DenseRows::new(&rows), &exact_config(0.5, false), 0),
        Err(Error::RidgeOutOfRange {
            what: "system",
            column: 0
        })
    );
    // Inside: an entry of 20 gives G[0][0] = (400 + 2) / 4, solved.
    let rows = extreme(20.0);
    d.evaluate(&DenseRows::new(&rows), &exact_config(0.5, false), 0)
        .unwrap();
    let rows = rows_of::<Q16>();
    let mut q = device_of::<Q16>(&data);
    assert_eq!(
        q.evaluate(&DenseRows::new(&rows), &exact_config(5e-4, false), 0),
        Err(Error::RidgeOutOfRange {
            what: "pivot reciprocal",
            column: 1
        })
    );
    let qrows = rows_of::<Q12>();
    let mut q = device_of::<Q12>(&data);
    q.evaluate(&DenseRows::new(&qrows), &exact_config(5e-4, false), 0)
        .unwrap();
    // A regulariser beyond ±512 is refused, not clamped to 512.
    let mut q = device_of::<Q16>(&data);
    assert_eq!(
        q.evaluate(&DenseRows::new(&rows), &exact_config(1000.0, false), 0),
        Err(Error::RidgeOutOfRange {
            what: "regulariser",
            column: 0
        })
    );
    q.evaluate(&DenseRows::new(&rows), &exact_config(100.0, false), 0)
        .unwrap();
}

/// A Q16.16 exact reconstruction with a user bias, item biases and a global mean on rows that
/// are not dyadic, so every rounding of the exact sums and of the factorisation shows: the
/// board must give the host's bits (pattern from a host run; `core/tests/reference.rs`
/// checks such solutions against f64).
pub fn q16_exact_bits() {
    const R: [[f32; 3]; 4] = [
        [0.31, -0.27, 0.05],
        [-0.12, 0.44, 0.38],
        [0.21, 0.09, -0.35],
        [-0.41, -0.18, 0.22],
    ];
    let rows = R.map(|r| r.map(Q16::from_f32));
    let biases = [0.3, -0.2, 0.1, -0.4].map(Q16::from_f32);
    let view = DenseRows::with_biases(&rows, &biases).unwrap();
    let mut d = Device::<Q16, 16, 3>::new();
    for &(i, r) in &[
        (0, 4.0),
        (1, 2.5),
        (2, 5.0),
        (3, 1.0),
        (1, 3.0),
        (2, 4.5),
        (0, 3.5),
        (3, 2.0),
    ] {
        d.data_mut().push(i, Q16::from_f32(r), 4).unwrap();
    }
    let cfg = RoundConfig {
        model: ModelConfig {
            user_bias: true,
            item_bias: true,
            global_mean: Some(3.5),
        },
        ..exact_config(0.1, true)
    };
    d.evaluate(&view, &cfg, 0).unwrap();
    let bits = [
        d.user()[0].to_bits(),
        d.user()[1].to_bits(),
        d.user()[2].to_bits(),
        d.user_bias().to_bits(),
    ];
    // Exact rational solution (rows and biases rounded to Q16.16, lambda 0.1), times 2^16:
    // 97947.52, 26694.40, -83998.31, -15288.73; every entry is within one unit of it.
    assert_eq!(bits, [97947, 26694, -83998, -15289]);
}
