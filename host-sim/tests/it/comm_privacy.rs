//! Issue 8 in the simulator: DP runs report the accountant's ε on every metrics row; byte counts
//! are the lengths of the real encoded frames; quantization error bounds and the unbiasedness of
//! stochastic rounding; dense / padded / sparse updates train the same model.

use crate::common::synthetic;

use fedrecon_core::rng::DeviceRng;
use fedrecon_core::wire::{self, Kind, RowEncoding, UpdateInfo};
use fedrecon_core::{DenseRows, Metrics, Update};
use fedrecon_host_sim::comm::transport;
use fedrecon_host_sim::comm::{
    self, CommConfig, Downlink, DownlinkRound, UpdateMode, Uplink, UplinkScratch,
};
use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens::{self, Ratings};
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::output::Record;
use fedrecon_host_sim::round::{self, Simulation, WORKER_STACK};
use fedrecon_host_sim::run::{RunOptions, run};
use fedrecon_host_sim::seeds::{Purpose, sample_without_replacement, seed_for};
use fedrecon_host_sim::server::privacy::{RdpAccountant, default_delta};

fn data() -> (tempfile::TempDir, Ratings) {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 160, 120, 40);
    let r = movielens::load(dir.path()).unwrap();
    (dir, r)
}

fn config() -> Config {
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.rounds = 8;
    cfg.run.clients_per_round = 25;
    cfg.run.eval_every = 4;
    cfg.run.eval_clients = None;
    cfg.run.threads = Some(2);
    cfg.run.seed = 11;
    cfg
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ------------------------------------------------------------------------- privacy

#[test]
fn dp_metrics_carry_the_accountants_growing_epsilon() {
    let (_d, ratings) = data();
    let mut cfg = config();
    cfg.privacy.enabled = true;
    cfg.privacy.noise_multiplier = 1.0;
    cfg.privacy.clip = 0.5;
    cfg.validate().unwrap();
    let out = tempfile::tempdir().unwrap();
    let res = run(
        &cfg,
        &ratings,
        &RunOptions {
            out: Some(out.path().to_path_buf()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let train_users = partition(&ratings, &cfg.data).train.len();
    let q = cfg.run.clients_per_round as f64 / train_users as f64;
    let delta = default_delta(train_users);
    let mut acct = RdpAccountant::default();
    let mut last = 0.0;
    let mut rounds = 0;
    for r in &res.records {
        if let Record::Train { round, privacy, .. } = r {
            let p = privacy.expect("a DP run's train rows carry epsilon");
            acct.step(q, 1.0, 1).unwrap();
            let (eps, _) = acct.epsilon(delta).unwrap();
            assert_eq!(p.epsilon, eps, "round {round}");
            assert_eq!(p.delta, delta);
            assert!(
                p.epsilon > last,
                "epsilon grows: {} after {last}",
                p.epsilon
            );
            last = p.epsilon;
            rounds += 1;
        }
    }
    assert_eq!(rounds, cfg.run.rounds);
    // Every line of metrics.jsonl carries epsilon and delta (the untrained evaluation has
    // spent nothing yet and is the only exception).
    let text = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["round"] == 0 {
            continue;
        }
        assert!(v["epsilon"].as_f64().unwrap() > 0.0, "{line}");
        assert_eq!(v["delta"].as_f64().unwrap(), delta, "{line}");
    }
    let last_line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["split"], "test");
    assert_eq!(last_line["epsilon"].as_f64().unwrap(), last);
}

#[test]
fn dp_without_noise_has_infinite_epsilon_and_more_noise_spends_less() {
    let (_d, ratings) = data();
    let eps = |z: f64| {
        let mut cfg = config();
        cfg.run.rounds = 3;
        cfg.privacy.enabled = true;
        cfg.privacy.noise_multiplier = z;
        cfg.privacy.clip = 0.5;
        let res = run(&cfg, &ratings, &RunOptions::default()).unwrap();
        res.test.epsilon.unwrap()
    };
    assert!(eps(0.0).is_infinite());
    let (e1, e2) = (eps(1.0), eps(2.0));
    assert!(e1.is_finite() && e2 < e1, "{e1} {e2}");
}

// ---------------------------------------------------------------- update modes

fn run_with(ratings: &Ratings, f: impl Fn(&mut Config)) -> fedrecon_host_sim::run::RunResult {
    let mut cfg = config();
    f(&mut cfg);
    cfg.validate().unwrap();
    run(&cfg, ratings, &RunOptions::default()).unwrap()
}

fn train_rows(records: &[Record]) -> Vec<&comm::TrafficStats> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Train { traffic, .. } => Some(traffic),
            _ => None,
        })
        .collect()
}

#[test]
fn dense_and_padded_updates_train_the_sparse_model_bit_for_bit() {
    let (_d, ratings) = data();
    let sparse = run_with(&ratings, |_| {});
    let dense = run_with(&ratings, |c| c.comm.update_mode = UpdateMode::Dense);
    let padded = run_with(&ratings, |c| {
        c.comm.update_mode = UpdateMode::Padded;
        c.comm.pad_rows = 40;
    });
    assert_eq!(bits(&sparse.items), bits(&dense.items), "dense vs sparse");
    assert_eq!(bits(&sparse.items), bits(&padded.items), "padded vs sparse");
    assert_eq!(sparse.test, dense.test);
    assert_eq!(sparse.test, padded.test);
    // Clients train on half their 40 ratings: every update fits in 40 rows, so every client
    // sends exactly 40; dense clients send every row; sparse ones fewer.
    for t in train_rows(&padded.records) {
        assert_eq!(t.padded_overflow, 0);
        assert_eq!(t.rows_up_mean, 40.0);
    }
    for t in train_rows(&dense.records) {
        assert_eq!(t.rows_up_mean, ratings.items() as f64);
    }
    for t in train_rows(&sparse.records) {
        assert!(t.rows_up_mean < 40.0);
    }
    // Under DP too: zero rows change neither the clipping norm nor the sum.
    let dp = |c: &mut Config| {
        c.privacy.enabled = true;
        c.privacy.noise_multiplier = 0.7;
        c.privacy.clip = 0.3;
    };
    let a = run_with(&ratings, dp);
    let b = run_with(&ratings, |c| {
        dp(c);
        c.comm.update_mode = UpdateMode::Dense;
    });
    assert_eq!(bits(&a.items), bits(&b.items), "DP dense vs sparse");
}

#[test]
fn padded_clients_with_more_rows_than_r_send_all_of_them() {
    let (_d, ratings) = data();
    let padded = run_with(&ratings, |c| {
        c.comm.update_mode = UpdateMode::Padded;
        c.comm.pad_rows = 5;
    });
    let sparse = run_with(&ratings, |_| {});
    assert_eq!(bits(&sparse.items), bits(&padded.items));
    for (p, s) in train_rows(&padded.records)
        .iter()
        .zip(train_rows(&sparse.records))
    {
        assert_eq!(p.padded_overflow, 25);
        assert_eq!(p.rows_up_mean, s.rows_up_mean);
    }
}

#[test]
fn shape_pads_to_exactly_r_sorted_rows_with_zero_decoys() {
    const K: usize = 4;
    let items = [3u32, 17, 40];
    let deltas = [[1.0f32, 2.0, 3.0, 4.0], [-1.0; 4], [0.5; 4]];
    let u = Update::<f32, K> {
        items: &items,
        deltas: &deltas,
        bias_deltas: None,
        weight: 6,
        metrics: Metrics::default(),
    };
    let cfg = CommConfig {
        update_mode: UpdateMode::Padded,
        pad_rows: 10,
        ..CommConfig::default()
    };
    let mut s = UplinkScratch::default();
    let sent = s.shape(&u, &cfg, 50, 99);
    assert_eq!(sent.items.len(), 10);
    assert!(sent.items.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(sent.weight, 6);
    for (i, row) in sent.items.iter().zip(sent.deltas) {
        match items.iter().position(|x| x == i) {
            Some(p) => assert_eq!(*row, deltas[p]),
            None => assert_eq!(*row, [0.0; K]),
        }
    }
    let decoys_a: Vec<u32> = sent.items.to_vec();
    let mut s2 = UplinkScratch::default();
    assert_eq!(s2.shape(&u, &cfg, 50, 99).items, &decoys_a[..], "seeded");
    assert_ne!(
        s2.shape(&u, &cfg, 50, 100).items,
        &decoys_a[..],
        "per client"
    );
    // More touched rows than R: all of them, no decoys.
    let small = CommConfig {
        pad_rows: 2,
        ..cfg.clone()
    };
    assert_eq!(s2.shape(&u, &small, 50, 1).items, &items);
    // Dense: every row.
    let dense = CommConfig {
        update_mode: UpdateMode::Dense,
        ..cfg
    };
    let d = s2.shape(&u, &dense, 50, 1);
    assert_eq!(d.items, (0..50).collect::<Vec<u32>>());
}

// ---------------------------------------------------------------- quantization

#[test]
fn deterministic_quantization_error_is_at_most_half_a_step() {
    const K: usize = 16;
    let mut rng = DeviceRng::new(5);
    for enc in [RowEncoding::I16, RowEncoding::I8] {
        let stride = enc.row_stride(K, false);
        let mut buf = vec![0u8; stride];
        for trial in 0..500 {
            let mag = 10f32.powi(trial % 7 - 4);
            let row: [f32; K] = std::array::from_fn(|_| (rng.unit_f32() * 2.0 - 1.0) * mag);
            wire::pack_row(enc, 7, &row, None, &mut buf).unwrap();
            let mut back = [0.0f32; K];
            wire::unpack_row(enc, false, &buf, &mut back).unwrap();
            let scale = comm::row_scale(&row, comm::qmax(enc));
            for (x, q) in row.iter().zip(&back) {
                // Half a step, plus f32 rounding of x / scale and q · scale.
                let bound = scale / 2.0 * (1.0 + 1e-5) + x.abs() * 2e-7;
                assert!(
                    (x - q).abs() <= bound,
                    "{enc:?}: {x} -> {q} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn stochastic_rounding_is_on_the_grid_within_a_step_and_unbiased() {
    const K: usize = 8;
    let row: [f32; K] = [0.9, -0.31, 0.123, 0.0, -0.9, 0.0051, 0.44, -0.777];
    for enc in [RowEncoding::I16, RowEncoding::I8] {
        let q = comm::qmax(enc);
        let scale = comm::row_scale(&row, q);
        let stride = enc.row_stride(K, false);
        let mut buf = vec![0u8; stride];
        let n = 20_000;
        let mut sum = [0f64; K];
        let mut rng = DeviceRng::new(1234);
        for _ in 0..n {
            let mut r = row;
            comm::stochastic_round(&mut r, q, &mut rng);
            // What the server decodes from the deterministic encoder is exactly r.
            wire::pack_row(enc, 1, &r, None, &mut buf).unwrap();
            let mut back = [0.0f32; K];
            wire::unpack_row(enc, false, &buf, &mut back).unwrap();
            assert_eq!(back, r, "{enc:?}: the pre-rounded row is on the grid");
            for k in 0..K {
                assert!((r[k] - row[k]).abs() <= scale * 1.000_01, "within a step");
                sum[k] += f64::from(r[k]);
            }
        }
        for k in 0..K {
            let mean = sum[k] / f64::from(n);
            // Each draw's error is within one step with variance <= step² / 4: the mean's
            // standard deviation is <= step / (2 sqrt n); allow 6 of them.
            let tol = 6.0 * f64::from(scale) / (2.0 * f64::from(n).sqrt()) + 1e-7;
            assert!(
                (mean - f64::from(row[k])).abs() <= tol,
                "{enc:?} value {k}: mean {mean} vs {} (tol {tol})",
                row[k]
            );
        }
    }
}

#[test]
fn quantized_downlink_lends_the_decoded_rows() {
    const K: usize = 8;
    let mut rng = DeviceRng::new(3);
    let params: Vec<f32> = (0..50 * K).map(|_| rng.unit_f32() - 0.5).collect();
    let mut buf = Vec::new();
    for mode in [Downlink::FullI16, Downlink::FullI8, Downlink::NeededI8] {
        let enc = mode.encoding();
        let d = DownlinkRound::prepare::<K>(mode, 4, &params, 50, false, &mut buf).unwrap();
        let deq = d.dequantized.expect("quantized");
        for (row, back) in params.as_chunks::<K>().0.iter().zip(deq.as_chunks::<K>().0) {
            let mut packed = vec![0u8; enc.row_stride(K, false)];
            wire::pack_row(enc, 0, row, None, &mut packed).unwrap();
            let mut want = [0.0f32; K];
            wire::unpack_row(enc, false, &packed, &mut want).unwrap();
            assert_eq!(*back, want);
        }
        assert_eq!(d.full_rows_bytes > 0, mode.full());
    }
    let f = DownlinkRound::prepare::<K>(Downlink::Full, 4, &params, 50, false, &mut buf).unwrap();
    assert!(f.dequantized.is_none());
    let n = DownlinkRound::prepare::<K>(Downlink::Needed, 4, &params, 50, false, &mut buf).unwrap();
    assert!(n.dequantized.is_none() && n.full_rows_bytes == 0);
}

#[test]
fn quantized_links_still_learn() {
    let (_d, ratings) = data();
    let base = run_with(&ratings, |_| {});
    let q = run_with(&ratings, |c| {
        c.comm.downlink = Downlink::FullI8;
        c.comm.uplink = Uplink::I8;
        c.comm.stochastic_rounding = true;
    });
    assert_ne!(bits(&base.items), bits(&q.items));
    assert!(
        (q.test.loss - base.test.loss).abs() < 0.05 * base.test.loss,
        "{} vs {}",
        q.test.loss,
        base.test.loss
    );
    let (b, t) = (train_rows(&base.records), train_rows(&q.records));
    // K = 8: an i8 row is 16 bytes against 36 in f32.
    assert!(t[0].bytes_down_mean < b[0].bytes_down_mean / 2.0);
    assert!(t[0].bytes_up_mean < b[0].bytes_up_mean / 2.0);
}

// ---------------------------------------------------------------- byte counts

/// In-process devices' link ([`transport::VIRTUAL_LINK`]): length-prefixed packets.
const LINK: wire::Framing = transport::VIRTUAL_LINK;

/// Round 1's byte counts equal the packets a test builds itself from core's encoders: the
/// devices are re-run here on the same rows with the same seeds.
fn check_bytes<const K: usize>(ratings: &Ratings, downlink: Downlink) {
    let mut cfg = config();
    cfg.comm.downlink = downlink;
    assert_eq!(cfg.model.k, K);
    let part = partition(ratings, &cfg.data);
    let mut sim = Simulation::<f32, K>::new(&cfg, &part, ratings.items()).unwrap();
    let before: Vec<[f32; K]> = sim.items().to_vec();
    let stats = sim.train_round().unwrap();

    let round = 1u32;
    let rc = round::round_config(
        &cfg,
        false,
        round::mean_rating(&part.train),
        ratings.items(),
    )
    .unwrap();
    let sample = sample_without_replacement(
        part.train.len(),
        cfg.run.clients_per_round,
        seed_for(cfg.run.seed, Purpose::SampleTrain, 1, 0),
    );
    let mut buf = vec![0u8; wire::max_frame_buf_len(K)];
    let (mut full_rows, mut full_msgs) = (0usize, 0u64);
    wire::encode_item_rows_in(
        LINK,
        round,
        downlink.encoding(),
        false,
        before.len(),
        |i| (i as u32, &before[i], None),
        &mut buf,
        |f: &[u8]| {
            full_rows += f.len();
            full_msgs += 1;
            Ok::<(), ()>(())
        },
    )
    .unwrap();
    let mut dev = round::new_workspace::<f32, K>();
    let (mut down, mut up, mut up_max) = (0u64, 0u64, 0u64);
    // Messages each way: the packets' framing is their length prefixes.
    let (mut down_msgs, mut up_msgs) = (0u64, 0u64);
    for &c in &sample {
        let client = part.train.client(c);
        let seed = seed_for(cfg.run.seed, Purpose::TrainClient, 1, client.user.into());
        let mut needed = client.items.to_vec();
        needed.sort_unstable();
        needed.dedup();
        let start = wire::RoundStart {
            round,
            seed,
            mode: wire::RoundMode::Train,
            config: rc,
            num_items: before.len() as u32,
            rows: if downlink.full() {
                before.len() as u32
            } else {
                needed.len() as u32
            },
            down: downlink.encoding(),
            up: RowEncoding::F32,
        };
        down += wire::encode_frame_in(LINK, Kind::RoundStart, &start, &mut buf).unwrap() as u64;
        down_msgs += 1;
        if downlink.full() {
            down += full_rows as u64;
            down_msgs += full_msgs;
        } else {
            wire::encode_item_rows_in(
                LINK,
                round,
                downlink.encoding(),
                false,
                needed.len(),
                |i| (needed[i], &before[needed[i] as usize], None),
                &mut buf,
                |f: &[u8]| {
                    down += f.len() as u64;
                    down_msgs += 1;
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        }
        let loaded = round::load_client(&mut dev, &client, before.len() as u32).unwrap();
        let rows = DenseRows::new(&before);
        let round::Loaded::Small(dev) = loaded else {
            panic!("a test client fits the small device")
        };
        let update = dev.train(&rows, &rc, seed).unwrap();
        let mut n = 0u64;
        wire::encode_update_in(
            LINK,
            UpdateInfo {
                round,
                client: client.user,
            },
            &update,
            RowEncoding::F32,
            &mut buf,
            |f: &[u8]| {
                n += f.len() as u64;
                up_msgs += 1;
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        up += n;
        up_max = up_max.max(n);
    }
    assert_eq!(stats.bytes_down, down, "{downlink:?} downlink");
    assert_eq!(stats.bytes_up, up, "uplink");
    let prefix = wire::PACKET_LEN_BYTES as u64;
    assert_eq!(
        stats.payload_down,
        down - prefix * down_msgs,
        "{downlink:?} downlink"
    );
    assert_eq!(stats.payload_up, up - prefix * up_msgs, "uplink");
    assert_eq!(stats.traffic.bytes_up_max, up_max);
    let clients = sample.len() as f64;
    assert_eq!(stats.traffic.bytes_up_mean, up as f64 / clients);
    assert_eq!(stats.traffic.bytes_down_mean, down as f64 / clients);
}

#[test]
fn byte_counts_are_the_encoded_frame_lengths() {
    let (_d, ratings) = data();
    std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || {
            for d in [
                Downlink::Full,
                Downlink::Needed,
                Downlink::FullI8,
                Downlink::NeededI16,
            ] {
                // The quantized downlink changes what devices train on: only check its bytes
                // down against the rows before the round (same for every mode), the bytes up
                // only for f32 downlinks.
                if d.encoding() == RowEncoding::F32 {
                    check_bytes::<8>(&ratings, d);
                } else {
                    check_down_only::<8>(&ratings, d);
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

fn check_down_only<const K: usize>(ratings: &Ratings, downlink: Downlink) {
    let mut cfg = config();
    cfg.comm.downlink = downlink;
    let part = partition(ratings, &cfg.data);
    let mut sim = Simulation::<f32, K>::new(&cfg, &part, ratings.items()).unwrap();
    let before: Vec<[f32; K]> = sim.items().to_vec();
    let stats = sim.train_round().unwrap();
    let rc = round::round_config(
        &cfg,
        false,
        round::mean_rating(&part.train),
        ratings.items(),
    )
    .unwrap();
    let sample = sample_without_replacement(
        part.train.len(),
        cfg.run.clients_per_round,
        seed_for(cfg.run.seed, Purpose::SampleTrain, 1, 0),
    );
    let mut buf = vec![0u8; wire::max_frame_buf_len(K)];
    let mut down = 0u64;
    for &c in &sample {
        let client = part.train.client(c);
        let seed = seed_for(cfg.run.seed, Purpose::TrainClient, 1, client.user.into());
        let mut needed = client.items.to_vec();
        needed.sort_unstable();
        needed.dedup();
        let list: Vec<u32> = if downlink.full() {
            (0..before.len() as u32).collect()
        } else {
            needed
        };
        let start = wire::RoundStart {
            round: 1,
            seed,
            mode: wire::RoundMode::Train,
            config: rc,
            num_items: before.len() as u32,
            rows: list.len() as u32,
            down: downlink.encoding(),
            up: RowEncoding::F32,
        };
        down += wire::encode_frame_in(LINK, Kind::RoundStart, &start, &mut buf).unwrap() as u64;
        wire::encode_item_rows_in(
            LINK,
            1,
            downlink.encoding(),
            false,
            list.len(),
            |i| (list[i], &before[list[i] as usize], None),
            &mut buf,
            |f: &[u8]| {
                down += f.len() as u64;
                Ok::<(), ()>(())
            },
        )
        .unwrap();
    }
    assert_eq!(stats.bytes_down, down, "{downlink:?}");
}
