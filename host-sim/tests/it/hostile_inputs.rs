//! Issue 20, as a hostile new user tries it: every refusal comes before round 1 (or before the
//! run directory is touched) and names what is wrong; what used to be lost, mixed or silently
//! ignored is not.

use crate::common::{bin, fedrecon, snapshot, stderr, synthetic};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fedrecon_host_sim::output::checkpoint::{self, Checkpoint};

fn data_dir(tmp: &Path) -> PathBuf {
    let d = tmp.join("data");
    std::fs::create_dir(&d).unwrap();
    synthetic(&d, 80, 60, 25);
    d
}

fn args<'a>(data: &'a Path, out: &'a Path, rounds: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tutorial",
        "--max-clients",
        "none",
        "--rounds",
        rounds,
        "--clients-per-round",
        "10",
        "--k",
        "8",
        "--threads",
        "1",
        "--no-progress",
        "--no-plots",
        "--out",
        out.to_str().unwrap(),
    ]
}

/// Runs and expects a failure whose message holds every one of `needles`.
fn refused(a: &[&str], needles: &[&str]) -> String {
    let o = fedrecon(a);
    let e = stderr(&o);
    assert!(!o.status.success(), "{a:?} succeeded");
    for n in needles {
        assert!(e.contains(n), "{a:?}: no {n:?} in: {e}");
    }
    e
}

fn resume(dir: &Path) -> Vec<&str> {
    vec![
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--no-progress",
        "--no-plots",
    ]
}

#[test]
fn momentum_runs_resume_from_their_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let cfg = tmp.path().join("momentum.toml");
    std::fs::write(
        &cfg,
        "[server]\noptimizer = \"momentum\"\nlr = 1.0\nmomentum = 0.9\n",
    )
    .unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let mut a = args(&data, &full, "6");
    a.extend(["--config", cfg.to_str().unwrap()]);
    assert!(fedrecon(&a).status.success());
    // The same run with a checkpoint after round 4, resumed from it.
    let mut a = args(&data, &cut, "6");
    a.extend(["--config", cfg.to_str().unwrap(), "--checkpoint-every", "4"]);
    assert!(fedrecon(&a).status.success());
    let ck = Checkpoint::decode(&std::fs::read(cut.join(checkpoint::FILE)).unwrap()).unwrap();
    assert_eq!((ck.round, ck.opt_tag), (4, 4));
    // Rounds 5 and 6 again from the checkpoint: the model must come out the same.
    std::fs::remove_file(cut.join("items.npy")).unwrap();
    let o = fedrecon(&resume(&cut));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(full.join("items.npy")).unwrap()
            == std::fs::read(cut.join("items.npy")).unwrap(),
        "the resumed momentum run differs from the uninterrupted one"
    );
}

#[test]
fn resume_refuses_other_data_flags_and_impossible_checkpoints_touching_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("run");
    let mut a = args(&data, &out, "4");
    a.extend(["--checkpoint-every", "2"]);
    assert!(fedrecon(&a).status.success());
    let before = snapshot(&out);

    // The same shape, other ratings (r -> 6 - r).
    let flipped = tmp.path().join("flipped");
    std::fs::create_dir(&flipped).unwrap();
    let text: String = std::fs::read_to_string(data.join("ratings.dat"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split("::").collect();
            let r: u32 = f[2].parse().unwrap();
            format!("{}::{}::{}::{}\n", f[0], f[1], 6 - r, f[3])
        })
        .collect();
    std::fs::write(flipped.join("ratings.dat"), text).unwrap();
    let mut a = resume(&out);
    a.extend(["--data", flipped.to_str().unwrap()]);
    refused(&a, &["data differs", "digest"]);
    assert_eq!(snapshot(&out), before);

    // Flags the resume used to ignore.
    for (flag, value, named) in [
        // (refused as DP runs are never checkpointed, so none can be resumed with DP)
        ("--dp-noise-multiplier", "1.0", "differentially private"),
        ("--uplink", "i8", "comm.uplink"),
        ("--update-mode", "dense", "comm.update_mode"),
        ("--downlink", "needed", "comm.downlink"),
        ("--qemu-devices", "1", "--qemu-devices"),
        ("--device", "/dev/null", "--device"),
        ("--link-faults", "0.1", "--link-faults"),
        ("--link-attacks", "0.1", "--link-attacks"),
        ("--enrolment", "/dev/null", "--enrolment"),
    ] {
        let mut a = resume(&out);
        a.extend([flag, value]);
        refused(&a, &[named]);
        assert_eq!(snapshot(&out), before, "{flag}");
    }

    // A checkpoint with a valid checksum and an impossible round.
    let path = out.join(checkpoint::FILE);
    let ck = Checkpoint::decode(&std::fs::read(&path).unwrap()).unwrap();
    std::fs::write(
        &path,
        Checkpoint {
            round: u32::MAX,
            ..ck.clone()
        }
        .encode(),
    )
    .unwrap();
    let before = snapshot(&out);
    refused(&resume(&out), &["round 4294967295"]);
    assert_eq!(snapshot(&out), before);
    // Metrics that do not hold the checkpoint's rounds.
    std::fs::write(
        &path,
        Checkpoint {
            metrics_jsonl: String::new(),
            ..ck
        }
        .encode(),
    )
    .unwrap();
    let before = snapshot(&out);
    refused(&resume(&out), &["rounds 1..=4"]);
    assert_eq!(snapshot(&out), before);
}

#[test]
fn configuration_is_checked_whole_before_round_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("run");
    let file = tmp.path().join("c.toml");
    let with = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        let mut a = args(&data, &out, "3");
        a.extend(["--config", file.to_str().unwrap()]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        refused(&a, needles);
        assert!(
            !out.join("metrics.jsonl").exists(),
            "{a:?} wrote metrics before refusing"
        );
    };
    run(
        with("[privacy]\nnoise_multiplier = 5.0\nclip = 0.01\n"),
        &["privacy.noise_multiplier", "privacy.clip", "enabled = true"],
    );
    run(
        with("[privacy]\nenabled = true\nnoise_multiplier = nan\n"),
        &["privacy.noise_multiplier"],
    );
    run(
        with("[privacy]\nenabled = true\nnoise_multiplier = -1.0\n"),
        &["privacy.noise_multiplier"],
    );
    run(
        with("[data]\nval_fraction = 0.0\n"),
        &["val split has no users"],
    );
    run(
        with("[server]\noptimizer = \"sgd\"\nlr = \"abc\"\n"),
        &["server.lr"],
    );
    let mut a = args(&data, &out, "3");
    let at = a.iter().position(|s| *s == "--max-clients").unwrap();
    a[at + 1] = "3";
    run(
        a.iter().map(|s| s.to_string()).collect(),
        &["split has no users"],
    );
    let mut a = args(&data, &out, "3");
    let at = a.iter().position(|s| *s == "--threads").unwrap();
    a[at + 1] = "20000";
    run(a.iter().map(|s| s.to_string()).collect(), &["run.threads"]);
    let mut a = args(&data, &out, "3");
    a.extend(["--client-lr", "-1"]);
    run(
        a.iter().map(|s| s.to_string()).collect(),
        &["client.client_lr"],
    );
}

#[test]
fn centralized_out_never_overwrites_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("run");
    assert!(fedrecon(&args(&data, &out, "2")).status.success());
    let before = snapshot(&out);
    let d = data.to_str().unwrap();
    for target in [out.join("metrics.jsonl"), out.clone()] {
        let t = target.to_str().unwrap();
        refused(
            &["centralized", "--data", d, "--epochs", "1", "--out", t],
            &[t],
        );
        assert_eq!(snapshot(&out), before, "{t}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `centralized`'s split flags are checked before anything is written: `--holdout` without
/// `--split seen`, a fraction outside (0, 1), and reconstruction flags with the seen split
/// (which reconstructs nothing) are refused naming the flag.
#[test]
fn centralized_split_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let d = data.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let base = ["centralized", "--data", d, "--epochs", "1", "--out", o];
    for (extra, needle) in [
        (&["--holdout", "0.2"][..], "--holdout"),
        (
            &["--split", "seen", "--holdout", "1.5"][..],
            "--holdout 1.5",
        ),
        (&["--split", "seen", "--holdout", "0"][..], "--holdout 0"),
        (
            &["--split", "seen", "--eval-clients", "5"][..],
            "--eval-clients",
        ),
    ] {
        let mut a = base.to_vec();
        a.extend(extra);
        refused(&a, &[needle]);
        assert!(!out.exists(), "{extra:?} wrote {o}");
    }
}

#[test]
fn closed_stdout_is_not_a_panic_and_a_bom_is_not_a_number() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let mut child = bin()
        .args(["stats", "--data", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let mut e = String::new();
    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    let bom = tmp.path().join("bom");
    std::fs::create_dir(&bom).unwrap();
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend(std::fs::read(data.join("ratings.dat")).unwrap());
    std::fs::write(bom.join("ratings.dat"), text).unwrap();
    let o = fedrecon(&["stats", "--data", bom.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn skipped_rounds_have_no_loss_and_plots_are_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("run");
    let mut a = args(&data, &out, "12");
    a.retain(|s| *s != "--no-plots");
    a.extend(["--dropout", "0.5", "--min-clients", "6"]);
    let o = fedrecon(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "train").collect();
    let skipped = train.iter().filter(|r| r["skipped"] == true).count();
    assert!(
        skipped > 0 && skipped < train.len(),
        "{skipped} of 12 skipped"
    );
    for r in &train {
        assert_eq!(r["skipped"] == true, r["loss"].is_null(), "{r}");
    }
    for png in ["train.png", "eval.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    let names: Vec<String> = snapshot(&out).into_iter().map(|(n, _)| n).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}
