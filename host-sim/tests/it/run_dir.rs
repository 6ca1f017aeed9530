//! Issue 20 through the real binary: a run directory is owned by one process at a time
//! (concurrent writers and resumers fail at once naming the holder), SIGINT/SIGTERM leave a
//! resumable directory, and a resume refuses anything it cannot honour before touching the
//! directory.

use crate::common::{bin, fedrecon, snapshot, stderr, synthetic};

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A small tutorial-style run over the synthetic data in `data`.
fn train_args(data: &Path, out: &Path, rounds: u32) -> Vec<String> {
    [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tutorial",
        "--max-clients",
        "none",
        "--rounds",
        &rounds.to_string(),
        "--clients-per-round",
        "10",
        "--k",
        "8",
        "--eval-every",
        "0",
        "--threads",
        "1",
        "--no-progress",
        "--no-plots",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn data_dir(tmp: &Path) -> std::path::PathBuf {
    let d = tmp.join("data");
    std::fs::create_dir(&d).unwrap();
    synthetic(&d, 80, 60, 25);
    d
}

fn spawn(args: &[String]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (the child still running), up to a minute.
fn wait_for(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} appeared",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` (e.g. "TERM") to the child.
fn signal(child: &Child, sig: &str) {
    let s = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

fn child_stderr(child: Child) -> (std::process::ExitStatus, String) {
    let o = child.wait_with_output().unwrap();
    (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_second_writer_or_resumer_fails_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("run");
    let mut args = train_args(&data, &out, 100_000);
    args.extend(["--checkpoint-every".into(), "1".into()]);
    let mut holder = spawn(&args);
    wait_for(&mut holder, &out.join("checkpoint.bin"));
    let pid = holder.id().to_string();

    for second in [
        {
            let mut a = train_args(&data, &out, 5);
            a.push("--force".into());
            a
        },
        vec![
            "train".into(),
            "--resume".into(),
            out.to_str().unwrap().into(),
            "--no-progress".into(),
        ],
    ] {
        let t = Instant::now();
        let o = bin().args(&second).output().unwrap();
        let e = stderr(&o);
        assert!(!o.status.success(), "{second:?} ran beside the holder");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{second:?} took {:?} to fail",
            t.elapsed()
        );
        assert!(
            e.contains("in use") && e.contains(&format!("pid {pid}")) && e.contains("started"),
            "{second:?}: {e}"
        );
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The lock died with its holder: the run resumes (and is cut short by a signal).
    let mut resumer = spawn(&[
        "train".into(),
        "--resume".into(),
        out.to_str().unwrap().into(),
        "--no-progress".into(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        resumer.try_wait().unwrap().is_none(),
        "the resume did not start after the holder died"
    );
    resumer.kill().unwrap();
    resumer.wait().unwrap();
}

#[test]
fn simultaneous_runs_into_one_directory_leave_one_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    for attempt in 0..3 {
        let out = tmp.path().join(format!("run{attempt}"));
        let runs: Vec<(u64, Child)> = [42u64, 7]
            .into_iter()
            .map(|seed| {
                let mut a = train_args(&data, &out, 6);
                a.extend(["--seed".into(), seed.to_string()]);
                (seed, spawn(&a))
            })
            .collect();
        let results: Vec<(u64, std::process::ExitStatus, String)> = runs
            .into_iter()
            .map(|(seed, c)| {
                let (s, e) = child_stderr(c);
                (seed, s, e)
            })
            .collect();
        let winners: Vec<u64> = results
            .iter()
            .filter(|r| r.1.success())
            .map(|r| r.0)
            .collect();
        assert_eq!(winners.len(), 1, "attempt {attempt}: {results:?}");
        let loser = results.iter().find(|r| !r.1.success()).unwrap();
        assert!(
            loser.2.contains("in use") || loser.2.contains("not empty"),
            "attempt {attempt}: {}",
            loser.2
        );
        let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
        assert!(
            cfg.contains(&format!("seed = {}", winners[0])),
            "config.toml of the other run: {cfg}"
        );
        let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let train = jsonl
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "train")
            .count();
        assert_eq!(train, 6, "attempt {attempt}: {jsonl}");
    }
}

#[test]
fn sigterm_and_sigint_leave_a_resumable_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let full = tmp.path().join("full");
    let o = bin().args(train_args(&data, &full, 300)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let out = tmp.path().join(format!("run-{sig}"));
        // No periodic checkpoints: the interruption itself must write one.
        let mut child = spawn(&train_args(&data, &out, 300));
        let jsonl = out.join("metrics.jsonl");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&jsonl).map_or(0, |s| s.lines().count()) < 3 {
            assert!(child.try_wait().unwrap().is_none(), "finished too soon");
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(&child, sig);
        let (status, e) = child_stderr(child);
        assert_eq!(status.code(), Some(code), "SIG{sig}: {e}");
        assert!(e.contains("interrupted") && e.contains("--resume"), "{e}");
        assert!(out.join("checkpoint.bin").exists());
        let leftovers: Vec<String> = snapshot(&out)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let r = fedrecon(&["train", "--resume", out.to_str().unwrap(), "--no-progress"]);
        assert!(r.status.success(), "{}", stderr(&r));
        assert!(
            std::fs::read(out.join("items.npy")).unwrap()
                == std::fs::read(full.join("items.npy")).unwrap(),
            "SIG{sig}: the resumed model differs from the uninterrupted one"
        );
    }
}

/// Crash consistency: SIGKILLs and SIGTERMs at random moments of a checkpointed run, each
/// followed by a resume (or a fresh start when no checkpoint was written yet), end with the
/// uninterrupted run's model and every round's row once.
#[test]
fn random_kills_and_terms_then_resumes_give_the_uninterrupted_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let rounds = 400;
    let full = tmp.path().join("full");
    let o = bin()
        .args(train_args(&data, &full, rounds))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let out = tmp.path().join("chaos");
    let mut fresh = train_args(&data, &out, rounds);
    fresh.extend(["--checkpoint-every".into(), "4".into(), "--force".into()]);
    let resume: Vec<String> = ["train", "--resume", out.to_str().unwrap(), "--no-progress"]
        .map(String::from)
        .to_vec();
    let mut s = 0x00DD_BA11_u64;
    let (mut kills, mut terms, mut finished) = (0, 0, false);
    for i in 0..12 {
        let started_fresh = !out.join("checkpoint.bin").exists();
        let mut child = spawn(if started_fresh { &fresh } else { &resume });
        s = fedrecon_host_sim::seeds::splitmix64(s);
        std::thread::sleep(Duration::from_millis(20 + s % 200));
        if child.try_wait().unwrap().is_some() {
            let (status, e) = child_stderr(child);
            assert!(status.success(), "{e}");
            finished = true;
            break;
        }
        if i % 2 == 0 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        } else {
            signal(&child, "TERM");
            let (status, e) = child_stderr(child);
            if status.success() {
                finished = true; // the run ended before the signal landed
                break;
            }
            assert_eq!(status.code(), Some(143), "{e}");
            assert!(out.join("checkpoint.bin").exists(), "{e}");
            terms += 1;
        }
    }
    if !finished {
        let args = if out.join("checkpoint.bin").exists() {
            resume
        } else {
            fresh
        };
        let o = bin().args(&args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    eprintln!("{kills} SIGKILLs, {terms} SIGTERMs");
    assert!(kills > 0 && terms > 0, "{kills} SIGKILLs, {terms} SIGTERMs");
    assert!(
        std::fs::read(out.join("items.npy")).unwrap()
            == std::fs::read(full.join("items.npy")).unwrap(),
        "after {kills} SIGKILLs and {terms} SIGTERMs the model differs from the uninterrupted one"
    );
    let rounds_seen: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds_seen, (1..=u64::from(rounds)).collect::<Vec<_>>());
}
