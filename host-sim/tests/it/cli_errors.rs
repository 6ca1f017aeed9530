//! Bad input through the binary (issue 9): every case exits non-zero with an error naming
//! what and where, and leaves the outputs of an earlier run untouched. Loader messages line by
//! line are pinned in `movielens_formats.rs`; these check the command's behaviour around them.

use crate::common::{fedrecon, snapshot, stderr};

use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;

/// 40 users × 20 ratings, user 5 with a single rating.
fn ratings(one_rating_user: bool) -> String {
    let mut t = String::new();
    for u in 1..=40u32 {
        let n = if one_rating_user && u == 5 { 1 } else { 20 };
        for j in 0..n {
            writeln!(
                t,
                "{u}::{}::{}::{}",
                (u * 7 + j * 3) % 30 + 1,
                1 + (u + j) % 5,
                1000 + j
            )
            .unwrap();
        }
    }
    t
}

const BASE: [&str; 13] = [
    "--preset",
    "tutorial",
    "--max-clients",
    "none",
    "--k",
    "8",
    "--rounds",
    "2",
    "--clients-per-round",
    "5",
    "--no-progress",
    "--no-plots",
    "--force",
];

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(BASE);
    args.extend(extra);
    fedrecon(&args)
}

#[test]
fn bad_inputs_fail_naming_what_and_where_and_leave_outputs_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::write(good.join("ratings.dat"), ratings(false)).unwrap();
    let out = tmp.path().join("run");
    let o = train(&good, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = snapshot(&out);
    assert!(before.iter().any(|(n, _)| n == "items.npy"));

    let check = |data: &Path, extra: &[&str], needles: &[&str]| {
        let o = train(data, &out, extra);
        assert!(!o.status.success(), "{extra:?} succeeded");
        let e = stderr(&o);
        for n in needles {
            assert!(e.contains(n), "{extra:?}: {n:?} not in {e}");
        }
        assert_eq!(snapshot(&out), before, "{extra:?} touched the outputs");
    };

    // Empty data directory.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    check(&empty, &[], &["--data", "empty", "is empty"]);
    // A file cut off in the middle of a line.
    let trunc = tmp.path().join("trunc");
    std::fs::create_dir(&trunc).unwrap();
    let mut t = ratings(false);
    t.truncate(t.len() - 7);
    std::fs::write(trunc.join("ratings.dat"), &t).unwrap();
    check(&trunc, &[], &["ratings.dat:800:"]);
    // The wrong format under a known name.
    let wrong = tmp.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(wrong.join("ratings.dat"), "userId,movieId,rating\n1,2,3\n").unwrap();
    check(&wrong, &[], &["ratings.dat:1:"]);
    // Invalid values in a config file and on the command line.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[client]\nclient_lr = -1.0\n").unwrap();
    check(
        &good,
        &["--config", bad.to_str().unwrap()],
        &["client.client_lr = -1.0", "must be"],
    );
    std::fs::write(&bad, "[reliability]\nmin_clients = \"many\"\n").unwrap();
    check(
        &good,
        &["--config", bad.to_str().unwrap()],
        &["bad.toml", "reliability.min_clients"],
    );
    check(&good, &["--dropout", "1.5"], &["reliability.dropout = 1.5"]);
    check(
        &good,
        &["--max-update-norm=-3"],
        &["reliability.max_update_norm"],
    );
    check(&good, &["--server-lr=-1"], &["server.lr = -1.0"]);
}

#[test]
fn invalid_out_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ratings.dat"), ratings(false)).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    for out in [file.clone(), file.join("sub")] {
        let o = train(&data, &out, &[]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains(&format!("--out {}", out.display())),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

/// A user with a single rating cannot split into two phases: the client is skipped (counted),
/// the run goes on.
#[test]
fn a_user_with_one_rating_is_skipped_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ratings.dat"), ratings(true)).unwrap();
    let out = tmp.path().join("run");
    let o = train(&data, &out, &["--eval-every", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("items.npy").is_file());
}

/// A DP run cannot be checkpointed (its accountant is not in the checkpoint, so a resumed run
/// would under-report ε): refused up front, naming the key, before anything is written.
#[test]
fn checkpointing_a_dp_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ratings.dat"), ratings(false)).unwrap();
    let out = tmp.path().join("out");
    let o = fedrecon(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tutorial",
        "--dp-noise-multiplier",
        "1.0",
        "--dp-clip",
        "1.0",
        "--checkpoint-every",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("reliability.checkpoint_every"), "{err}");
    assert!(err.contains("accountant"), "{err}");
    assert!(!out.join("metrics.jsonl").exists());
}
