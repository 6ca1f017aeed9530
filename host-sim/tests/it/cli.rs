//! The `fedrecon` binary: exit codes, error messages naming the flag, `config` output, and a
//! tiny `train` + `recommend` round trip on synthetic data.

use crate::common::{fedrecon, stderr};

use std::fmt::Write as _;
use std::path::Path;

#[test]
fn config_prints_a_loadable_full_toml() {
    let o = fedrecon(&["config", "--preset", "paper"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let cfg = fedrecon_host_sim::config::Config::from_toml_str(&text, "stdout", None).unwrap();
    assert_eq!(
        cfg,
        fedrecon_host_sim::config::Config::preset(fedrecon_host_sim::config::Preset::Paper)
    );
}

#[test]
fn missing_data_fails_naming_the_flag() {
    let o = fedrecon(&["train", "--data", "/definitely/not/here", "--no-progress"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--data"), "{}", stderr(&o));
}

#[test]
fn bad_preset_is_a_usage_error() {
    let o = fedrecon(&["config", "--preset", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}

fn synthetic(dir: &Path) {
    let mut text = String::new();
    let mut s = 99u64;
    for u in 1..=60u32 {
        for j in 0..30u32 {
            s = fedrecon_host_sim::seeds::splitmix64(s);
            let item = (u * 7 + j * 3) % 50 + 1;
            let r = 1 + (s % 5) as u32;
            writeln!(text, "{u}::{item}::{r}::{}", 1000 + j).unwrap();
        }
    }
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
    let movies: String = (1..=50)
        .map(|i| format!("{i}::Movie {i} (2000)::Drama\n"))
        .collect();
    std::fs::write(dir.join("movies.dat"), movies).unwrap();
}

#[test]
fn train_writes_outputs_refuses_reuse_and_recommend_reads_them() {
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let (d, r) = (
        data.path().to_str().unwrap(),
        run.to_str().unwrap().to_owned(),
    );
    let args = [
        "train",
        "--data",
        d,
        "--preset",
        "tutorial",
        "--rounds",
        "3",
        "--clients-per-round",
        "10",
        "--k",
        "8",
        "--threads",
        "2",
        "--no-progress",
        "--out",
        &r,
    ];
    let o = fedrecon(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("test (final)"), "{table}");
    for f in ["metrics.jsonl", "metrics.csv", "items.npy", "config.toml"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // A second run into the same directory is refused, and allowed with --force.
    let o = fedrecon(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(fedrecon(&forced).status.success());

    let model = run.join("items.npy");
    let o = fedrecon(&[
        "recommend",
        "--data",
        d,
        "--model",
        model.to_str().unwrap(),
        "--user",
        "3",
        "-k",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("Movie ")).count(),
        5,
        "{text}"
    );
    let o = fedrecon(&[
        "recommend",
        "--data",
        d,
        "--model",
        model.to_str().unwrap(),
        "--user",
        "999",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--user"), "{}", stderr(&o));
}
