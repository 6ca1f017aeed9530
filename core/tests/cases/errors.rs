//! Every error path of the round is a typed error, never a panic, and nothing is half-done.

use fedrecon_core::{
    ClientData, DenseRows, Device, Error, ItemRows, Phase, RoundConfig, SplitConfig,
};

const ROWS: [[f32; 2]; 3] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];

/// Item ids, ratings and capacity are checked on entry; a rejected example is not added.
pub fn dataset_rejects_bad_examples() {
    let mut d = ClientData::<f32, 2>::new();
    assert_eq!(
        d.push(3, 4.0, 3),
        Err(Error::ItemOutOfRange {
            item: 3,
            num_items: 3
        })
    );
    assert_eq!(
        d.push(0, f32::NAN, 3),
        Err(Error::InvalidRating { index: 0 })
    );
    assert_eq!(
        d.push(0, f32::INFINITY, 3),
        Err(Error::InvalidRating { index: 0 })
    );
    assert_eq!(d.push(0, 10.5, 3), Err(Error::InvalidRating { index: 0 }));
    assert_eq!(d.push(0, -1.0, 3), Err(Error::InvalidRating { index: 0 }));
    assert!(d.is_empty());
    d.push(0, 4.0, 3).unwrap();
    d.push(1, 5.0, 3).unwrap();
    assert_eq!(
        d.push(2, 1.0, 3),
        Err(Error::CapacityExceeded {
            what: "client dataset",
            capacity: 2
        })
    );
    assert_eq!(d.items(), &[0, 1]);
    assert_eq!(d.ratings(), &[4.0, 5.0]);
    assert!(ClientData::<f32, 4>::from_pairs([(0, 1.0), (7, 1.0)], 3).is_err());
}

/// Each invalid hyperparameter names itself.
pub fn invalid_config_is_rejected() {
    let mut dev = Device::<f32, 8, 2>::new();
    for (i, r) in [(0, 4.0), (1, 2.0), (2, 3.0), (0, 5.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    let rows = DenseRows::new(&ROWS);
    let bad = [
        RoundConfig {
            recon_lr: f32::NAN,
            ..RoundConfig::default()
        },
        RoundConfig {
            post_lr: -1.0,
            ..RoundConfig::default()
        },
        RoundConfig {
            init_scale: f32::INFINITY,
            ..RoundConfig::default()
        },
        RoundConfig {
            accuracy_threshold: -0.5,
            ..RoundConfig::default()
        },
        RoundConfig {
            split: SplitConfig {
                batch_size: 0,
                ..SplitConfig::default()
            },
            ..RoundConfig::default()
        },
        RoundConfig {
            split: SplitConfig {
                recon_epochs: 0,
                ..SplitConfig::default()
            },
            ..RoundConfig::default()
        },
        RoundConfig {
            split: SplitConfig {
                post_steps_max: Some(0),
                ..SplitConfig::default()
            },
            ..RoundConfig::default()
        },
    ];
    for cfg in &bad {
        match dev.train(&rows, cfg, 0) {
            Err(Error::InvalidConfig { what }) => assert!(!what.is_empty()),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}

/// The rows given to the round must cover the client's items.
pub fn item_out_of_range_for_rows() {
    let mut dev = Device::<f32, 8, 2>::new();
    for (i, r) in [(0, 4.0), (5, 2.0)] {
        dev.data_mut().push(i, r, 10).unwrap();
    }
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: 1,
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    assert_eq!(
        dev.train(&DenseRows::new(&ROWS), &cfg, 0).unwrap_err(),
        Error::ItemOutOfRange {
            item: 5,
            num_items: 3
        }
    );
}

/// A partial view (a board's cache) that lacks a needed row is a typed error.
struct OnlyItem0;
impl ItemRows<f32, 2> for OnlyItem0 {
    fn num_items(&self) -> u32 {
        3
    }
    fn row(&self, item: u32) -> Option<&[f32; 2]> {
        (item == 0).then_some(&ROWS[0])
    }
}

/// Missing rows are reported in reconstruction and in post-reconstruction.
pub fn missing_row_is_reported() {
    let mut dev = Device::<f32, 8, 2>::new();
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: 1,
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    for (i, r) in [(1, 4.0), (0, 2.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    assert_eq!(
        dev.train(&OnlyItem0, &cfg, 0).unwrap_err(),
        Error::MissingItemRow { item: 1 }
    );
    dev.data_mut().clear();
    for (i, r) in [(0, 4.0), (2, 2.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    assert_eq!(
        dev.train(&OnlyItem0, &cfg, 0).unwrap_err(),
        Error::MissingItemRow { item: 2 }
    );
}

/// Empty splits: an empty dataset, and a one-batch client with `split_dataset`.
pub fn empty_split_is_reported() {
    let mut dev = Device::<f32, 8, 2>::new();
    let rows = DenseRows::new(&ROWS);
    let cfg = RoundConfig::default();
    assert_eq!(
        dev.train(&rows, &cfg, 0).unwrap_err(),
        Error::EmptySplit {
            phase: Phase::Reconstruction
        }
    );
    for (i, r) in [(0, 4.0), (1, 2.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    assert_eq!(
        dev.train(&rows, &cfg, 0).unwrap_err(),
        Error::EmptySplit {
            phase: Phase::PostReconstruction
        }
    );
    assert_eq!(
        dev.evaluate(&rows, &cfg, 0).unwrap_err(),
        Error::EmptySplit {
            phase: Phase::PostReconstruction
        }
    );
}

/// Top-k sizes outside 1..=CAP are refused.
pub fn top_k_bounds() {
    use fedrecon_core::rank::TopK;
    assert!(matches!(
        TopK::<f32, 4>::new(0),
        Err(Error::InvalidConfig { .. })
    ));
    assert_eq!(
        TopK::<f32, 4>::new(5).unwrap_err(),
        Error::CapacityExceeded {
            what: "top-k heap",
            capacity: 4
        }
    );
    let mut t = TopK::<f32, 4>::new(2).unwrap();
    t.offer(1, f32::NAN);
    t.offer(2, f32::INFINITY);
    assert!(t.is_empty(), "non-finite scores are not ranked");
}

/// Display names what is wrong and where, without allocating.
pub fn display_names_the_problem() {
    use core::fmt::Write;
    let mut s: heapless::String<96> = heapless::String::new();
    write!(
        s,
        "{}",
        Error::ItemOutOfRange {
            item: 7,
            num_items: 3
        }
    )
    .unwrap();
    assert_eq!(
        s.as_str(),
        "item id 7 is out of range (the model has 3 items)"
    );
    s.clear();
    write!(
        s,
        "{}",
        Error::CapacityExceeded {
            what: "client dataset",
            capacity: 300
        }
    )
    .unwrap();
    assert_eq!(s.as_str(), "client dataset is full (capacity 300)");
    let mut s: heapless::String<160> = heapless::String::new();
    write!(
        s,
        "{}",
        Error::RidgeOutOfRange {
            what: "item row",
            column: 4
        }
    )
    .unwrap();
    assert_eq!(
        s.as_str(),
        "exact reconstruction's item row at column 4 is beyond the fixed-point solve's range \
         (item rows or ratings too large, or user_l2 too small)"
    );
}

/// A round that trains more distinct rows than the workspace's `R` is refused with a typed
/// error before any row is touched (a board budgets `R` separately from `N`).
pub fn trained_rows_capacity_is_enforced() {
    let mut dev = Device::<f32, 8, 2, 1>::new();
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: 1,
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    // Post batches are examples 1 and 3: items 1 and 2, two rows for a capacity of one.
    for (i, r) in [(0, 4.0), (1, 2.0), (0, 3.0), (2, 5.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    let rows = DenseRows::new(&ROWS);
    assert_eq!(
        dev.train(&rows, &cfg, 0).unwrap_err(),
        Error::CapacityExceeded {
            what: "trained item rows",
            capacity: 1
        }
    );
    // One trained row fits.
    dev.data_mut().clear();
    for (i, r) in [(0, 4.0), (1, 2.0), (2, 3.0), (1, 5.0)] {
        dev.data_mut().push(i, r, 3).unwrap();
    }
    assert_eq!(dev.train(&rows, &cfg, 0).unwrap().items, &[1]);
}
