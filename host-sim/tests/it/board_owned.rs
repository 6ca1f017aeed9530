//! Boards with their own data (issue 17, `--board-users`): a QEMU board is one fixed user;
//! its ratings are provisioned once into its emulated flash (a host file), survive a reboot
//! (a new QEMU process finds them and the server sends them no more), a corrupted flash is
//! refused by its checksum and provisioned again, and every run stays bit-identical to the
//! all-virtual run.

use crate::common;

use fedrecon_host_sim::board::BoardOptions;
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::run::{RunOptions, run, run_with_boards};

#[test]
fn a_boards_own_ratings_survive_a_reboot_and_are_never_sent_again() {
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::synthetic(dir.path(), 30, 60, 24);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.rounds = 2;
    cfg.run.eval_every = 0;
    cfg.run.eval_clients = Some(4);
    cfg.run.threads = Some(2);
    let part = partition(&ratings, &cfg.data);
    // Every training user in every round, so the board's user is always sampled.
    cfg.run.clients_per_round = part.train.len();
    let user = part.train.client(3).user;
    let flash = tempfile::tempdir().unwrap();
    let opts = RunOptions::default();
    let virt = run(&cfg, &ratings, &opts).unwrap();
    let boards = BoardOptions {
        qemu_devices: 1,
        users: vec![user],
        flash_dir: Some(flash.path().to_path_buf()),
        ..BoardOptions::default()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let file = flash.path().join("qemu0").join("fedrecon-flash.bin");
    let mut provisioned = Vec::new();
    for pass in 0..3 {
        if pass == 2 {
            // A flipped bit in flash: the checksum refuses the record, the server provisions
            // the ratings again.
            let mut bytes = std::fs::read(&file).unwrap();
            bytes[20] ^= 0x04;
            std::fs::write(&file, bytes).unwrap();
        }
        let with = run_with_boards(&cfg, &ratings, &opts, &boards).unwrap();
        let stats = with.boards[0].1;
        assert_eq!(
            stats.clients,
            u64::from(cfg.run.rounds),
            "pass {pass}: {stats:?}"
        );
        assert_eq!(bits(&with.items), bits(&virt.items), "pass {pass}");
        assert_eq!(with.test, virt.test, "pass {pass}");
        provisioned.push(stats.provisioned);
    }
    assert_eq!(
        provisioned,
        [1, 0, 1],
        "sent once, kept across the reboot, resent after corruption"
    );
    let n = part.train.client(3).len();
    assert_eq!(
        std::fs::metadata(&file).unwrap().len() as usize,
        12 + 8 * n + 4,
        "the record: header, {n} ratings, CRC-32"
    );
}
