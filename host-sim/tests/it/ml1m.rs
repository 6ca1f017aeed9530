//! Checks against the real MovieLens 1M files when they are beside the checkout
//! (`../shared/data/ml-1m`, see data/README.md); skipped with a message otherwise.

use std::path::PathBuf;
use std::time::Instant;

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;

fn ml1m_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-1m");
    if dir.join("ratings.dat").is_file() {
        Some(dir)
    } else {
        eprintln!("skipping: MovieLens 1M not found at {}", dir.display());
        None
    }
}

/// Figures from data/README.md ("Figures to check a loader against").
#[test]
fn ml1m_figures_match_data_readme() {
    let Some(dir) = ml1m_dir() else { return };
    let start = Instant::now();
    let ratings = movielens::load(&dir).expect("ML-1M loads");
    eprintln!("ML-1M loaded in {:?}", start.elapsed());
    let s = ratings.stats();
    eprintln!("{s}");
    assert_eq!(ratings.format(), Some(movielens::Format::Dat));
    assert_eq!(s.ratings, 1_000_209);
    assert_eq!(s.users, 6_040);
    assert_eq!(s.movies, 3_706);
    assert!((s.mean - 3.581564453029317).abs() < 1e-9, "mean {}", s.mean);
    assert_eq!(s.median, 4.0);
    assert_eq!(
        s.counts_by_value,
        [
            (1.0, 56_174),
            (2.0, 107_557),
            (3.0, 261_197),
            (4.0, 348_971),
            (5.0, 226_310)
        ]
    );
    assert_eq!(
        (s.per_user_min, s.per_user_median, s.per_user_max),
        (20, 96.0, 2_314)
    );
    assert_eq!(
        s.per_user_histogram.iter().map(|b| b.users).sum::<usize>(),
        6_040
    );
    // Users appear in id order in ratings.dat, so dense user d is raw id d + 1.
    assert!(
        ratings
            .user_raw_ids()
            .iter()
            .enumerate()
            .all(|(d, &raw)| raw as usize == d + 1)
    );
    // Every rated movie is listed in movies.dat; titles are Latin-1 decoded.
    assert!(ratings.titles().iter().all(Option::is_some));
    let first = ratings.user(0).items[0] as usize;
    assert_eq!(ratings.item_raw_ids()[first], 1193);
    assert_eq!(
        ratings.title(first),
        Some("One Flew Over the Cuckoo's Nest (1975)")
    );
    assert!(ratings.titles().iter().flatten().any(|t| t.contains('é')));
}

/// docs/SEMANTICS.md, preset `paper`: 4832 / 604 / 604 users, at most 300 ratings each.
#[test]
fn ml1m_paper_split() {
    let Some(dir) = ml1m_dir() else { return };
    let ratings = movielens::load(&dir).expect("ML-1M loads");
    let start = Instant::now();
    let p = partition(&ratings, &Config::preset(Preset::Paper).data);
    eprintln!("paper partition in {:?}", start.elapsed());
    assert_eq!((p.train.len(), p.val.len(), p.test.len()), (4832, 604, 604));
    for set in [&p.train, &p.val, &p.test] {
        for c in set.iter() {
            assert_eq!(c.len(), ratings.user_len(c.user as usize).min(300));
        }
    }
    // numpy RandomState(42).shuffle(list(range(6040))) starts 5529, 710, 4923.
    assert_eq!(p.train.users()[..3], [5529, 710, 4923]);
}

/// docs/SEMANTICS.md, preset `tutorial`: users 0..2000 split 1600 / 200 / 200, first 300 ratings in file order.
#[test]
fn ml1m_tutorial_split() {
    let Some(dir) = ml1m_dir() else { return };
    let ratings = movielens::load(&dir).expect("ML-1M loads");
    let p = partition(&ratings, &Config::preset(Preset::Tutorial).data);
    assert_eq!((p.train.len(), p.val.len(), p.test.len()), (1600, 200, 200));
    let c = p.train.client(0);
    assert_eq!(c.user, 1860);
    let all = ratings.user(1860);
    assert_eq!(c.items, &all.items[..c.len()]);
    assert!(c.len() <= 300);
}
