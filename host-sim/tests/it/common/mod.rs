//! Helpers shared by the simulator's integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

/// The `fedrecon` binary with quiet logs.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedrecon"));
    c.env("RUST_LOG", "warn");
    c
}

/// Runs the binary to completion.
pub fn fedrecon(args: &[&str]) -> Output {
    bin().args(args).output().expect("the fedrecon binary runs")
}

/// The run's standard error, for assertion messages.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a synthetic ML-1M-style `ratings.dat` into `dir`: `users` users rating `per_user`
/// distinct items of `items` each, with ratings from a rank-3 model rounded into 1..=5
/// (seeded, so every test sees the same data).
pub fn synthetic(dir: &Path, users: u32, items: u32, per_user: u32) {
    let mut s = 0x5eedu64;
    let mut rnd = || {
        s = fedrecon_host_sim::seeds::splitmix64(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let uf: Vec<[f64; 3]> = (0..users).map(|_| [rnd(), rnd(), rnd()]).collect();
    let vf: Vec<[f64; 3]> = (0..items).map(|_| [rnd(), rnd(), rnd()]).collect();
    let mut text = String::new();
    for u in 0..users {
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < per_user as usize {
            let i = (rnd() * f64::from(items)) as u32;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        for (t, &i) in chosen.iter().enumerate() {
            let dot: f64 = (0..3).map(|d| uf[u as usize][d] * vf[i as usize][d]).sum();
            let r = (1.0 + 4.0 * dot / 1.5).round().clamp(1.0, 5.0) as u32;
            writeln!(text, "{}::{}::{}::{}", u + 1, i + 1, r, 978_300_000 + t).unwrap();
        }
    }
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
}

pub fn qemu_available() -> bool {
    std::process::Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the QEMU board tests can run here (the firmware image from `cargo build-fw` and
/// qemu-system-arm). Otherwise prints why and returns false, or fails the test when
/// `FEDRECON_REQUIRE_QEMU=1` (CI sets it after building the images).
pub fn qemu_boards_available() -> bool {
    let required = std::env::var_os("FEDRECON_REQUIRE_QEMU").is_some_and(|v| v == "1");
    let missing = match fedrecon_host_sim::board::find_firmware(None) {
        Err(e) => Some(format!("{e:#}")),
        Ok(_) if !qemu_available() => Some("qemu-system-arm is not installed".to_string()),
        Ok(_) => None,
    };
    if let Some(why) = missing {
        assert!(!required, "FEDRECON_REQUIRE_QEMU=1 but: {why}");
        eprintln!("skipped: {why}");
        return false;
    }
    true
}

/// Every file in `dir` with its bytes, sorted by name: "left intact" is equality of two of these.
/// The run directory's lock file is not compared: every claim rewrites who holds it.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name() != fedrecon_host_sim::output::LOCK_FILE)
        })
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The tutorial preset as the QEMU board tests run it: every user, every rating, and the qemu
/// image's K = 50.
pub fn board_config() -> fedrecon_host_sim::config::Config {
    use fedrecon_host_sim::config::{Config, Preset};
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.data.max_ratings_per_user = None;
    cfg.model.k = 50; // the qemu image's K
    cfg
}

/// `preset` as a board can train it: `best` without implicit feedback and both halves (a
/// board cannot hold a client's implicit rows yet: the simulator refuses to attach boards to
/// such a model); the other presets as they are.
pub fn board_preset(
    preset: fedrecon_host_sim::config::Preset,
) -> fedrecon_host_sim::config::Config {
    let mut cfg = fedrecon_host_sim::config::Config::preset(preset);
    cfg.client.implicit = false;
    cfg.client.both_halves = false;
    cfg
}

/// The TOML overlay of [`board_preset`] for the command line.
pub const BOARD_OVERLAY: &str = "[client]\nimplicit = false\nboth_halves = false\n";

/// Many clients per round, with dropout and over-selection, so selection crosses the
/// windows of the streaming fold (and, in a cluster, the ranks).
pub fn many_clients_config(threads: usize) -> fedrecon_host_sim::config::Config {
    use fedrecon_host_sim::config::{Config, Preset};
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.clients_per_round = 300;
    cfg.run.threads = Some(threads);
    cfg.run.seed = 11;
    cfg.reliability.dropout = 0.1;
    cfg.reliability.over_select = 0.2;
    cfg
}

/// What a round reports, without its timings: equal strings mean equal rounds.
pub fn round_figures(s: &fedrecon_host_sim::round::RoundStats) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {} {:?} {:?} {:?} {:?} {}",
        s.loss.to_bits(),
        s.rating_accuracy.to_bits(),
        s.bytes_down,
        s.bytes_up,
        s.payload_down,
        s.payload_up,
        s.clients,
        s.skipped,
        s.applied,
        s.faults,
        s.traffic,
        s.privacy,
        s.security,
        s.examples
    )
}
