//! Evaluation and recommendations on boards (issue 17): held-out users evaluated on QEMU
//! boards (`--board-eval`) give the metrics of virtual evaluation bit for bit, and
//! `fedrecon recommend --qemu-devices 1` prints the host's top-k.

use crate::common;

use fedrecon_core::ScalarKind;
use fedrecon_host_sim::board::{BoardOptions, find_image};
use fedrecon_host_sim::config::{Preset, Scalar};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::run::{RunOptions, run, run_with_boards};

/// Every record (wall-clock and upload bytes aside: a board's update carries its own client
/// id) and the item matrix of a run with two evaluating boards equal the all-virtual run's,
/// in f32 with the tutorial model and in Q16.16 with the best preset's biases and exact
/// reconstruction.
#[test]
fn evaluation_on_boards_is_identical_to_virtual() {
    if !common::qemu_boards_available() || find_image(None, ScalarKind::Q16_16, 50).is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::synthetic(dir.path(), 60, 80, 24);
    let ratings = movielens::load(dir.path()).unwrap();
    for (preset, scalar) in [(Preset::Tutorial, Scalar::F32), (Preset::Best, Scalar::Q16)] {
        let mut cfg = common::board_preset(preset);
        cfg.data.max_clients = None;
        cfg.data.max_ratings_per_user = None;
        cfg.model.k = 50;
        cfg.run.rounds = 1;
        cfg.run.clients_per_round = 3;
        cfg.run.eval_every = 1;
        cfg.run.eval_clients = Some(6);
        cfg.run.threads = Some(2);
        cfg.run.scalar = scalar;
        let opts = RunOptions::default();
        let virt = run(&cfg, &ratings, &opts).unwrap();
        let boards = BoardOptions {
            qemu_devices: 2,
            evaluate: true,
            ..BoardOptions::default()
        };
        let with = run_with_boards(&cfg, &ratings, &opts, &boards).unwrap();
        let evaluated: u64 = with.boards.iter().map(|(_, s)| s.evaluations).sum();
        // Validation after round 0 and round 1, then the test split: two boards each time.
        assert_eq!(evaluated, 6, "{preset:?}: {:?}", with.boards);
        let records = |r: &fedrecon_host_sim::run::RunResult| -> Vec<serde_json::Value> {
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
        };
        assert_eq!(records(&with), records(&virt), "{preset:?} {scalar:?}");
        assert!(
            records(&virt)
                .iter()
                .any(|r| r["ranked_users"].as_u64().unwrap_or(0) > 0),
            "no evaluation ranked a user: the ranking on boards went unchecked"
        );
        assert_eq!(with.test, virt.test);
    }
}

/// `fedrecon recommend --qemu-devices 1` reconstructs the user on the board and ranks the
/// catalogue there: its printout is the host's, for a model without biases (`tutorial`: SGD
/// reconstruction) and one with them (`best`: biases, global mean, the exact solve with priors).
#[test]
fn recommend_on_a_qemu_board_prints_the_hosts_top_k() {
    if !common::qemu_boards_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    common::synthetic(data.path(), 40, 120, 30);
    for preset in ["tutorial", "best"] {
        recommend_on_a_qemu_board_as_the_host(data.path(), preset);
    }
}

fn recommend_on_a_qemu_board_as_the_host(data: &std::path::Path, preset: &str) {
    let out = tempfile::tempdir().unwrap();
    let overlay = out.path().with_extension("board.toml");
    std::fs::write(&overlay, common::BOARD_OVERLAY).unwrap();
    let o = common::fedrecon(&[
        "train",
        "--config",
        overlay.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--preset",
        preset,
        "--max-clients",
        "none",
        "--k",
        "50",
        "--rounds",
        "2",
        "--clients-per-round",
        "5",
        "--eval-every",
        "0",
        "--no-progress",
        "--no-plots",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let model = out.path().join("items.npy");
    let recommend = |board: bool| {
        let mut args = vec![
            "recommend",
            "--data",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--user",
            "7",
            "-k",
            "12",
        ];
        if board {
            args.extend(["--qemu-devices", "1"]);
        }
        let o = common::fedrecon(&args);
        assert!(o.status.success(), "{}", common::stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let host = recommend(false);
    assert_eq!(host.lines().count(), 13, "{preset}: {host}");
    assert_eq!(recommend(true), host, "{preset}");
}
