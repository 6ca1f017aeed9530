//! Links that survive (issue 17): a real board (`--device tcp:...`) whose link dies in the
//! middle of a client is reopened and resynchronised, as a QEMU board is restarted; the
//! client whose exchange failed twice is dropped for the round (counted in `link_failed`,
//! like a dropout) and the rounds go on, bit-identical to a reference run where that
//! client's update is refused.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fedrecon_core::ScalarKind;
use fedrecon_host_sim::board::links::LinkTimeouts;
use fedrecon_host_sim::board::{BoardOptions, Boards, find_firmware};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::round::Simulation;

/// Copies `from` to `to` until `from` ends or, with `cut`, that many bytes passed; then shuts
/// both sockets (the link dies).
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<usize>) {
    let mut buf = [0u8; 512];
    let mut passed = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = cut.map_or(n, |c| n.min(c - passed));
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n;
        if cut.is_some_and(|c| passed >= c) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A TCP bridge to the QEMU board's UART socket at `board`: its first `cuts` connections die
/// after `after` bytes from the host; later ones pass everything.
fn bridge(board: u16, cuts: usize, after: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, host) in listener.incoming().enumerate() {
            let Ok(host) = host else { return };
            let t0 = std::time::Instant::now();
            let uart = loop {
                match TcpStream::connect(("127.0.0.1", board)) {
                    Ok(s) => break s,
                    Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("bridge cannot reach the board: {e}"),
                }
            };
            let cut = (n < cuts).then_some(after);
            let (h2, u2) = (host.try_clone().unwrap(), uart.try_clone().unwrap());
            std::thread::spawn(move || pump(host, uart, cut));
            std::thread::spawn(move || pump(u2, h2, None));
        }
    });
    port
}

#[test]
fn a_board_whose_link_dies_is_reopened_and_its_client_dropped_for_the_round() {
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::synthetic(dir.path(), 40, 60, 24);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.clients_per_round = 4;
    cfg.run.threads = Some(2);
    cfg.run.seed = 3;
    let part = partition(&ratings, &cfg.data);

    let elf = find_firmware(None).unwrap();
    let uart = fedrecon_qemu::Qemu::free_port().unwrap();
    // The "real" board is provisioned as one: its key file in its working directory, the
    // host given the matching enrolment file.
    let board_dir = dir.path().join("board");
    let enrolment = fedrecon_host_sim::board::auth::provision_key_file(&board_dir, 7).unwrap();
    let enrolment_file = dir.path().join("enrolment.txt");
    enrolment.save(&enrolment_file).unwrap();
    let _qemu = fedrecon_qemu::Qemu::new(fedrecon_qemu::Machine::Mps2An386, &elf)
        .icount(0)
        .serial_socket(uart)
        .current_dir(&board_dir)
        .spawn(Stdio::null(), Stdio::null())
        .unwrap();
    // The first two connections die 3,000 bytes into what the host sends: inside the first
    // client's rows (24 rows of 204 bytes), on its first attempt and on its retry.
    let port = bridge(uart, 2, 3000);
    let opts = BoardOptions {
        devices: vec![format!("tcp:127.0.0.1:{port}")],
        enrolment: Some(enrolment_file),
        timeouts: Some(LinkTimeouts {
            read: Duration::from_secs(5),
            connect: Duration::from_secs(10),
        }),
        ..BoardOptions::default()
    };
    let boards = Boards::open(&opts, 50, ScalarKind::F32, cfg.run.seed).unwrap();
    let mut sim = Simulation::<f32, 50>::new(&cfg, &part, ratings.items()).unwrap();
    sim.attach_boards(boards).unwrap();
    let rounds: u32 = 3;
    let mut failed = BTreeSet::new();
    let mut losses = Vec::new();
    for _ in 0..rounds {
        let s = sim.train_round().unwrap();
        assert!(
            s.applied,
            "round {} was not applied: {:?}",
            s.round, s.faults
        );
        failed.extend(s.faults.link_failed.iter().map(|&u| (s.round, u)));
        losses.push(s.loss.to_bits());
    }
    let stats = sim.boards().boards()[0].stats();
    eprintln!("dropped {failed:?}; {stats:?}");
    assert_eq!(failed.len(), 1, "one client dropped: {failed:?}");
    assert_eq!(failed.iter().next().unwrap().0, 1, "in round 1");
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    assert_eq!(stats.link_failures, 1, "{stats:?}");
    assert_eq!(stats.clients, u64::from(rounds) - 1, "{stats:?}");
    assert!(!sim.boards().boards()[0].is_lost());

    // The reference: all virtual, the dropped client's update made unusable.
    let failed = Arc::new(failed);
    let mut reference = Simulation::<f32, 50>::new(&cfg, &part, ratings.items()).unwrap();
    let f = Arc::clone(&failed);
    reference.set_tamper(Some(Box::new(move |round, user, bytes: &mut Vec<u8>| {
        if f.contains(&(round, user)) {
            bytes.clear();
            bytes.push(1);
        }
    })));
    let mut ref_losses = Vec::new();
    for _ in 0..rounds {
        ref_losses.push(reference.train_round().unwrap().loss.to_bits());
    }
    assert_eq!(losses, ref_losses);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(sim.params()), bits(reference.params()));
}
