//! Golden outputs (issue 13): short `fedrecon train` runs whose `items.npy` (sha256) and
//! `metrics.jsonl` (without wall-clock fields) must stay bit-identical while the simulator is
//! restructured. Each golden is `tests/goldens/NAME.txt`: the command's arguments, the hash,
//! then the metrics rows; a mismatch prints both files.
//!
//! The runs go through the binary, so the goldens pin the behaviour users see whatever the
//! library's layout. Synthetic-data goldens always run; ML-1M goldens need
//! `../shared/data/ml-1m` and skip with a printed reason without it; the QEMU-board goldens
//! need the firmware image and qemu-system-arm (see `common::qemu_boards_available`).
//!
//! To record goldens after an intended change: `FEDRECON_BLESS=1 cargo test -p
//! fedrecon-host-sim --test it goldens::`, then say in the commit which goldens moved and why.

use crate::common;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Arguments every golden run shares: no progress bar, no plots, 2 threads (results are
/// bit-identical for any thread count).
const QUIET: [&str; 4] = ["--no-progress", "--no-plots", "--threads", "2"];

/// The synthetic data set of the goldens: 150 users × 30 ratings of 200 items.
fn synthetic_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::synthetic(dir.path(), 150, 200, 30);
    dir
}

/// A short tutorial-preset run on the synthetic data, to extend with a variant's flags.
fn synthetic_base() -> Vec<&'static str> {
    vec![
        "--preset",
        "tutorial",
        "--max-clients",
        "none",
        "--k",
        "8",
        "--rounds",
        "3",
        "--clients-per-round",
        "12",
        "--eval-every",
        "2",
        "--eval-clients",
        "20",
    ]
}

fn ml1m_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-1m");
    if dir.join("ratings.dat").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipped the ML-1M goldens: MovieLens 1M not found at {}",
            dir.display()
        );
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `metrics.jsonl` rows without their wall-clock field (`seconds`), keys sorted.
fn metrics_without_timing(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            serde_json::to_string(&v).unwrap()
        })
        .collect()
}

/// The golden text of a finished run: its arguments (data folder elided), the sha256 of
/// `items.npy`, the metrics rows.
fn golden_text(args: &[&str], out: &Path) -> String {
    let items = std::fs::read(out.join("items.npy")).unwrap();
    let mut s = format!("# fedrecon train {}\n", args.join(" "));
    s += &format!("items.npy sha256 {}\n", hex(&Sha256::digest(&items)));
    for row in metrics_without_timing(out) {
        s += &row;
        s.push('\n');
    }
    s
}

/// Runs `fedrecon train --data DATA ARGS --out TMP` (then, for a resume golden, `train
/// --resume TMP`) and compares with (or, under `FEDRECON_BLESS=1`, writes) `goldens/NAME.txt`.
/// Returns a mismatch description instead of panicking so one test reports every golden.
fn check(name: &str, data: &Path, args: &[&str], resume: bool) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut full = vec!["train", "--data", data.to_str().unwrap()];
    full.extend_from_slice(args);
    full.extend_from_slice(&QUIET);
    full.extend(["--out", out.to_str().unwrap()]);
    let t0 = std::time::Instant::now();
    let o = common::fedrecon(&full);
    assert!(o.status.success(), "{name}: {}", common::stderr(&o));
    if resume {
        let o = common::fedrecon(&["train", "--resume", out.to_str().unwrap(), "--no-progress"]);
        assert!(
            o.status.success(),
            "{name} (resume): {}",
            common::stderr(&o)
        );
    }
    eprintln!("{name}: {:.1} s", t0.elapsed().as_secs_f64());
    let mut shown: Vec<&str> = args.to_vec();
    if resume {
        shown.push("(then --resume)");
    }
    let got = golden_text(&shown, &out);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(format!("{name}.txt"));
    if std::env::var_os("FEDRECON_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (record it with FEDRECON_BLESS=1)", path.display()));
    (got != want).then(|| format!("golden {name} differs\n--- expected\n{want}--- got\n{got}"))
}

fn assert_all(mismatches: Vec<Option<String>>) {
    let failed: Vec<String> = mismatches.into_iter().flatten().collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The variants every data set runs: each is the base run plus these flags.
fn variants() -> Vec<(&'static str, Vec<&'static str>, bool)> {
    vec![
        ("scalar_q16", vec!["--scalar", "q16"], false),
        ("scalar_q12", vec!["--scalar", "q12"], false),
        (
            "dp",
            vec!["--dp-noise-multiplier", "0.5", "--dp-clip", "0.05"],
            false,
        ),
        (
            "dp_adaptive",
            vec!["--dp-noise-multiplier", "0.3", "--dp-adaptive-clip"],
            false,
        ),
        (
            "uplink_i8",
            vec!["--uplink", "i8", "--stochastic-rounding"],
            false,
        ),
        ("uplink_i16", vec!["--uplink", "i16"], false),
        (
            "downlink_needed_i16",
            vec!["--downlink", "needed-i16"],
            false,
        ),
        ("downlink_full_i8", vec!["--downlink", "full-i8"], false),
        ("update_dense", vec!["--update-mode", "dense"], false),
        (
            "update_padded",
            vec!["--update-mode", "padded", "--pad-rows", "40"],
            false,
        ),
        (
            "dropout_over_select",
            vec![
                "--dropout",
                "0.3",
                "--over-select",
                "0.5",
                "--min-clients",
                "3",
            ],
            false,
        ),
        ("checkpoint_resume", vec!["--checkpoint-every", "2"], true),
    ]
}

#[test]
fn synthetic_goldens() {
    let data = synthetic_dir();
    let base = synthetic_base();
    let mut results = vec![check("synthetic_tutorial", data.path(), &base, false)];
    for preset in ["paper", "best"] {
        let args = [
            "--preset",
            preset,
            "--k",
            "8",
            "--rounds",
            "3",
            "--clients-per-round",
            "12",
            "--eval-every",
            "2",
            "--eval-clients",
            "20",
        ];
        results.push(check(
            &format!("synthetic_{preset}"),
            data.path(),
            &args,
            false,
        ));
    }
    for (name, extra, resume) in variants() {
        let mut args = base.clone();
        args.extend(extra);
        results.push(check(
            &format!("synthetic_{name}"),
            data.path(),
            &args,
            resume,
        ));
    }
    assert_all(results);
}

#[test]
fn ml1m_goldens() {
    let Some(data) = ml1m_dir() else { return };
    // Two rounds of 5 clients and 20 evaluation users: seconds in a debug build.
    let short = [
        "--rounds",
        "2",
        "--clients-per-round",
        "5",
        "--eval-every",
        "1",
        "--eval-clients",
        "20",
    ];
    let mut results = Vec::new();
    for preset in ["tutorial", "paper", "best"] {
        let mut args = vec!["--preset", preset];
        args.extend(short);
        results.push(check(&format!("ml1m_{preset}"), &data, &args, false));
    }
    // A cross-section of the variants (every one runs on the synthetic data): loading ML-1M
    // dominates each run's time in a debug build.
    let chosen = [
        "scalar_q16",
        "dp",
        "downlink_needed_i16",
        "dropout_over_select",
    ];
    for (name, extra, resume) in variants() {
        if !chosen.contains(&name) {
            continue;
        }
        let mut args = vec!["--preset", "tutorial"];
        args.extend(short);
        args.extend(extra);
        results.push(check(&format!("ml1m_{name}"), &data, &args, resume));
    }
    assert_all(results);
}

/// Runs with 2 QEMU boards among the clients (the firmware image's K = 50): CI runs this in
/// scripts/check.sh's QEMU step (`FEDRECON_REQUIRE_QEMU=1`).
#[test]
fn qemu_board_goldens() {
    if !common::qemu_boards_available() {
        return;
    }
    let data = synthetic_dir();
    let mut base = synthetic_base();
    let k = base.iter().position(|a| *a == "--k").unwrap();
    base[k + 1] = "50";
    base.extend(["--qemu-devices", "2"]);
    let mut results = vec![check("qemu_synthetic_tutorial", data.path(), &base, false)];
    let mut dropout = base.clone();
    dropout.extend(["--dropout", "0.3", "--over-select", "0.5"]);
    results.push(check(
        "qemu_synthetic_dropout",
        data.path(),
        &dropout,
        false,
    ));
    if let Some(ml) = ml1m_dir() {
        let args = [
            "--preset",
            "tutorial",
            "--rounds",
            "2",
            "--clients-per-round",
            "5",
            "--eval-every",
            "1",
            "--eval-clients",
            "20",
            "--qemu-devices",
            "2",
        ];
        results.push(check("qemu_ml1m_tutorial", &ml, &args, false));
    }
    assert_all(results);
}
