//! Boards in every scalar, model and link mode (issue 17): a run where a QEMU board trains
//! some clients of every round is bit-identical to the all-virtual run of the same scalar,
//! model (`tutorial`: no biases; `best`: user and item biases, global mean, L2, exact
//! reconstruction) and link (downlink rows f32 / i16 / i8, uplink rows f32 / i16 / i8,
//! sparse / dense / padded updates, stochastic rounding).
//!
//! CI runs [`CI_CASES`], which cover every scalar with both models, every encoding in both
//! directions and every update mode (`board_matrix_ci`); `board_matrix_full` (ignored: about
//! 160 cases) runs the whole product and prints the matrix:
//! `cargo test -p fedrecon-host-sim --test it -- --ignored --nocapture board_matrix_full`.

use std::path::{Path, PathBuf};

use crate::common;

use fedrecon_core::ScalarKind;
use fedrecon_host_sim::board::{BoardOptions, find_image};
use fedrecon_host_sim::comm::{Downlink, UpdateMode, Uplink};
use fedrecon_host_sim::config::{Config, Preset, Scalar};
use fedrecon_host_sim::data::movielens::{self, Ratings};
use fedrecon_host_sim::run::{RunOptions, run, run_with_boards};

/// One cell of the matrix.
#[derive(Clone, Copy, Debug)]
struct Case {
    scalar: Scalar,
    preset: Preset,
    down: Downlink,
    up: Uplink,
    update: UpdateMode,
    stochastic: bool,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} {:?} down={} up={:?} {:?}{}",
            self.scalar.name(),
            self.preset,
            self.down.name(),
            self.up,
            self.update,
            if self.stochastic { " stochastic" } else { "" }
        )
    }
}

const fn case(
    scalar: Scalar,
    preset: Preset,
    down: Downlink,
    up: Uplink,
    update: UpdateMode,
    stochastic: bool,
) -> Case {
    Case {
        scalar,
        preset,
        down,
        up,
        update,
        stochastic,
    }
}

/// Every scalar with both models; every downlink and uplink encoding, every update mode and
/// stochastic rounding at least once.
const CI_CASES: [Case; 6] = [
    case(
        Scalar::F32,
        Preset::Best,
        Downlink::NeededI16,
        Uplink::I8,
        UpdateMode::Padded,
        true,
    ),
    case(
        Scalar::F32,
        Preset::Tutorial,
        Downlink::FullI8,
        Uplink::I16,
        UpdateMode::Dense,
        false,
    ),
    case(
        Scalar::Q16,
        Preset::Best,
        Downlink::Full,
        Uplink::I16,
        UpdateMode::Sparse,
        false,
    ),
    case(
        Scalar::Q16,
        Preset::Tutorial,
        Downlink::NeededI8,
        Uplink::F32,
        UpdateMode::Padded,
        false,
    ),
    case(
        Scalar::Q12,
        Preset::Best,
        Downlink::FullI16,
        Uplink::I8,
        UpdateMode::Dense,
        false,
    ),
    case(
        Scalar::Q12,
        Preset::Tutorial,
        Downlink::Needed,
        Uplink::I16,
        UpdateMode::Sparse,
        true,
    ),
];

/// The data: 40 users × 24 ratings of 60 items (a dense update is 60 rows).
fn data() -> (tempfile::TempDir, Ratings) {
    let dir = tempfile::tempdir().unwrap();
    common::synthetic(dir.path(), 40, 60, 24);
    let ratings = movielens::load(dir.path()).unwrap();
    (dir, ratings)
}

fn config(c: &Case) -> Config {
    let mut cfg = common::board_preset(c.preset);
    cfg.data.max_clients = None;
    cfg.data.max_ratings_per_user = None;
    cfg.model.k = 50; // the images' K
    cfg.run.rounds = 2;
    cfg.run.clients_per_round = 3;
    cfg.run.eval_every = 0;
    cfg.run.eval_clients = Some(6);
    cfg.run.threads = Some(2);
    cfg.run.seed = 17;
    cfg.run.scalar = c.scalar;
    cfg.comm.downlink = c.down;
    cfg.comm.uplink = c.up;
    cfg.comm.update_mode = c.update;
    cfg.comm.pad_rows = 20;
    cfg.comm.stochastic_rounding = c.stochastic;
    cfg
}

/// The metrics records without wall-clock time and upload bytes (a board's update carries
/// its own client id, a varint of another length than the user's).
fn records(r: &fedrecon_host_sim::run::RunResult) -> Vec<serde_json::Value> {
    r.records
        .iter()
        .map(|rec| {
            let mut v = serde_json::to_value(rec).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["seconds", "bytes_up", "bytes_up_mean", "bytes_up_max"] {
                o.remove(k);
            }
            v
        })
        .collect()
}

/// Runs `c` all-virtual and with one QEMU board; `Err` describes a difference. Returns the
/// board's seconds per client.
fn check(c: &Case, ratings: &Ratings) -> Result<f64, String> {
    check_image(c, ratings, None)
}

/// [`check`] with the board booting `firmware` (default: the M4F image of the case's scalar).
fn check_image(c: &Case, ratings: &Ratings, firmware: Option<PathBuf>) -> Result<f64, String> {
    let cfg = config(c);
    let opts = RunOptions::default();
    let virt = run(&cfg, ratings, &opts).map_err(|e| format!("virtual run: {e:#}"))?;
    let boards = BoardOptions {
        qemu_devices: 1,
        firmware,
        ..BoardOptions::default()
    };
    let with = run_with_boards(&cfg, ratings, &opts, &boards)
        .map_err(|e| format!("run with a board: {e:#}"))?;
    let stats = with.boards[0].1;
    if stats.clients < u64::from(cfg.run.rounds) {
        return Err(format!("the board trained only {} clients", stats.clients));
    }
    if records(&with) != records(&virt) {
        return Err(format!(
            "metrics differ:\n virtual {:?}\n board   {:?}",
            records(&virt),
            records(&with)
        ));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    if bits(&with.items) != bits(&virt.items) {
        return Err("the item matrices differ".into());
    }
    Ok(stats.seconds / stats.clients as f64)
}

fn images_available() -> bool {
    if !common::qemu_boards_available() {
        return false;
    }
    let required = std::env::var_os("FEDRECON_REQUIRE_QEMU").is_some_and(|v| v == "1");
    for s in [ScalarKind::Q16_16, ScalarKind::Q3_12] {
        if let Err(e) = find_image(None, s, 50) {
            assert!(!required, "FEDRECON_REQUIRE_QEMU=1 but: {e:#}");
            eprintln!("skipped: {e:#}");
            return false;
        }
    }
    true
}

#[test]
fn board_matrix_ci() {
    if !images_available() {
        return;
    }
    let (_dir, ratings) = data();
    let t0 = std::time::Instant::now();
    let failures: Vec<String> = CI_CASES
        .iter()
        .filter_map(|c| {
            let r = check(c, &ratings);
            eprintln!("{}: {r:?}", c.label());
            r.err().map(|e| format!("{}: {e}", c.label()))
        })
        .collect();
    eprintln!(
        "{} board matrix cases in {:.1} s",
        CI_CASES.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Boards without an FPU in the simulator's rounds (issue 16): the Cortex-M3 build of the
/// QEMU board images (`images/mps2-an385-thumbv7m/`, booted on the FPU-less mps2-an385, which
/// the image's soft-float ELF header selects) computes in Q16.16 and Q3.12 exactly as the
/// virtual devices of that scalar do.
#[test]
fn cortex_m3_boards_in_fixed_point_are_bit_identical() {
    if !images_available() {
        return;
    }
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/target/images/mps2-an385-thumbv7m");
    let required = std::env::var_os("FEDRECON_REQUIRE_QEMU").is_some_and(|v| v == "1");
    if !dir.join("qemu-q12").is_file() {
        assert!(
            !required,
            "FEDRECON_REQUIRE_QEMU=1 but {} has no qemu-q12 (cargo build-fw)",
            dir.display()
        );
        eprintln!(
            "skipped: no Cortex-M3 board images in {} (cargo build-fw)",
            dir.display()
        );
        return;
    }
    let (_dir, ratings) = data();
    for (scalar, image, preset, down, up) in [
        (
            Scalar::Q12,
            "qemu-q12",
            Preset::Tutorial,
            Downlink::Full,
            Uplink::F32,
        ),
        (
            Scalar::Q16,
            "qemu-q16",
            Preset::Best,
            Downlink::NeededI8,
            Uplink::I16,
        ),
    ] {
        let c = case(scalar, preset, down, up, UpdateMode::Sparse, false);
        let elf = dir.join(image);
        assert_eq!(
            fedrecon_qemu::Machine::for_elf(&elf).unwrap(),
            fedrecon_qemu::Machine::Mps2An385,
            "{} does not name the Cortex-M3 machine",
            elf.display()
        );
        let r = check_image(&c, &ratings, Some(elf));
        eprintln!("Cortex-M3 {}: {r:?}", c.label());
        assert!(r.is_ok(), "Cortex-M3 {}: {r:?}", c.label());
    }
}

#[test]
#[ignore = "the whole matrix, about 160 QEMU runs: run by hand for the figure"]
fn board_matrix_full() {
    if !images_available() {
        return;
    }
    let (_dir, ratings) = data();
    let mut failures = Vec::new();
    let mut cases = 0;
    for scalar in [Scalar::F32, Scalar::Q16, Scalar::Q12] {
        for preset in [Preset::Tutorial, Preset::Best] {
            for down in [Downlink::Full, Downlink::FullI16, Downlink::NeededI8] {
                for up in [Uplink::F32, Uplink::I16, Uplink::I8] {
                    for update in [UpdateMode::Sparse, UpdateMode::Dense, UpdateMode::Padded] {
                        let stochastic = up != Uplink::F32 && update == UpdateMode::Padded;
                        let c = case(scalar, preset, down, up, update, stochastic);
                        let r = check(&c, &ratings);
                        cases += 1;
                        println!(
                            "| {} | {} |",
                            c.label(),
                            match &r {
                                Ok(s) => format!("identical ({s:.2} s per board client)"),
                                Err(e) => format!("DIFFERS: {e}"),
                            }
                        );
                        if let Err(e) = r {
                            failures.push(format!("{}: {e}", c.label()));
                        }
                    }
                }
            }
        }
    }
    println!("{cases} cases, {} differ", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a board encodes for a shaped update (`fedrecon_core::wire::encode_shaped_update`,
/// decoys drawn without a catalogue-sized mark array) is byte-for-byte what the simulator
/// sends for a virtual device (`comm::UplinkScratch::shape` then the wire encoder), for every
/// update mode, encoding, rounding, bias flag and many random updates. No QEMU needed.
#[test]
fn shaped_updates_match_the_simulators_uplink() {
    use fedrecon_core::wire::{self, UpdateInfo, UpdateShape, UplinkRows};
    use fedrecon_core::{Metrics, Update};
    use fedrecon_host_sim::comm::{CommConfig, UplinkScratch, transport};
    const K: usize = 6;
    let mut s = 0x5ba9e_u64;
    let mut next = || {
        s = fedrecon_host_sim::seeds::splitmix64(s);
        s
    };
    let mut cases = 0;
    for trial in 0..300u32 {
        let num_items = 1 + (next() % 90) as u32;
        let mut items: Vec<u32> = (0..num_items).filter(|_| next() % 3 == 0).collect();
        items.truncate(40);
        let deltas: Vec<[f32; K]> = items
            .iter()
            .map(|_| std::array::from_fn(|_| (next() % 2001) as f32 / 1000.0 - 1.0))
            .collect();
        let biases: Vec<f32> = items
            .iter()
            .map(|_| (next() % 101) as f32 / 100.0)
            .collect();
        let with_bias = trial % 2 == 0;
        let update = Update::<f32, K> {
            items: &items,
            deltas: &deltas,
            bias_deltas: with_bias.then_some(biases.as_slice()),
            weight: 7,
            metrics: Metrics::default(),
        };
        for (mode, rows) in [
            (UpdateMode::Sparse, UplinkRows::Sparse),
            (UpdateMode::Dense, UplinkRows::Dense),
            (UpdateMode::Padded, UplinkRows::Padded),
        ] {
            for up in [Uplink::F32, Uplink::I16, Uplink::I8] {
                let stochastic = up != Uplink::F32 && next() % 2 == 0;
                let cfg = CommConfig {
                    update_mode: mode,
                    pad_rows: 1 + (next() % 60) as usize,
                    uplink: up,
                    stochastic_rounding: stochastic,
                    ..CommConfig::default()
                };
                let seed = next();
                let mut scratch = UplinkScratch::default();
                let sent = scratch.shape(&update, &cfg, num_items as usize, seed);
                let (mut buf, mut host) = (transport::frame_buffer::<K>(), Vec::new());
                // A board's serial framing, to compare byte for byte.
                let serial = wire::Framing::Stream;
                transport::encode_update_as(
                    serial,
                    3,
                    0,
                    &sent,
                    up.encoding(),
                    &mut buf,
                    &mut host,
                )
                .unwrap();
                let shape = UpdateShape {
                    rows,
                    pad_rows: cfg.pad_rows as u32,
                    seed,
                    stochastic_rounding: stochastic,
                };
                let mut board = Vec::new();
                let n = wire::encode_shaped_update::<f32, K, 64, std::convert::Infallible>(
                    UpdateInfo {
                        round: 3,
                        client: 0,
                    },
                    &update,
                    up.encoding(),
                    &shape,
                    num_items,
                    &mut buf,
                    |f| {
                        board.extend_from_slice(f);
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(n as usize, scratch.items.len(), "trial {trial} {mode:?}");
                assert_eq!(board, host, "trial {trial} {mode:?} {up:?} {stochastic}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 2700);
}
