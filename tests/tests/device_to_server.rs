//! Cross-crate: one `fedrecon-core` device round, through the simulator's real uplink
//! (`fedrecon-host-sim::transport`: postcard messages, as in-process packets and as a serial
//! link's COBS + CRC-32 frames), arrives at the server as the device computed it: exactly for
//! f32 rows, within half a quantisation step for i16/i8 rows, with the same weight and metric
//! sums whichever the framing; and a serial frame corrupted on the way is refused, never
//! half-delivered.

use fedrecon_core::wire::{Framing, RowEncoding};
use fedrecon_core::{DenseRows, Device, Q12, Q16, RoundConfig, Scalar, SplitConfig};
use fedrecon_host_sim::comm::transport::{decode_update, encode_update_as};

const K: usize = 16;
const ITEMS: usize = 40;

/// A seeded client of 60 ratings and a seeded item matrix.
fn world() -> (Vec<[f32; K]>, Vec<(u32, f32)>) {
    let mut s = 0x0dd5u64;
    let mut rnd = || {
        s = fedrecon_host_sim::seeds::splitmix64(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let rows = (0..ITEMS)
        .map(|_| core::array::from_fn(|_| (rnd() as f32 - 0.5) * 0.2))
        .collect();
    let data = (0..60)
        .map(|_| {
            (
                (rnd() * ITEMS as f64) as u32,
                1.0 + (rnd() * 5.0).floor().min(4.0) as f32,
            )
        })
        .collect();
    (rows, data)
}

/// Rows of an update as `(item, delta)` in f32.
type Rows = Vec<(u32, [f32; K])>;

/// The device's update in f32 (item, row) form, and the server's decoded view of it.
fn round_trip<S: Scalar>(encoding: RowEncoding) -> (Rows, Rows) {
    let (rows_f32, data) = world();
    let rows: Vec<[S; K]> = rows_f32.iter().map(|r| r.map(S::from_f32)).collect();
    let mut dev = Box::new(Device::<S, 64, K>::new());
    for &(i, r) in &data {
        dev.data_mut()
            .push(i, S::from_f32(r), ITEMS as u32)
            .unwrap();
    }
    let cfg = RoundConfig {
        split: SplitConfig {
            batch_size: 4,
            shuffle_seed: Some(9),
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    let up = dev.train(&DenseRows::new(&rows), &cfg, 77).unwrap();
    let sent: Vec<(u32, [f32; K])> = up
        .items
        .iter()
        .zip(up.deltas)
        .map(|(&i, d)| (i, d.map(S::to_f32)))
        .collect();
    let (mut buf, mut bytes) = (Vec::new(), Vec::new());
    let mut packets = Vec::new();
    encode_update_as(
        Framing::Packet,
        3,
        11,
        &up,
        encoding,
        &mut buf,
        &mut packets,
    )
    .unwrap();
    let mut in_process = Vec::new();
    let h = decode_update::<K>(Framing::Packet, &packets, 3, 11, &mut buf, |i, d, _| {
        in_process.push((i, *d))
    })
    .unwrap();
    encode_update_as(Framing::Stream, 3, 11, &up, encoding, &mut buf, &mut bytes).unwrap();
    let mut got = Vec::new();
    let header = decode_update::<K>(Framing::Stream, &bytes, 3, 11, &mut buf, |i, d, _| {
        got.push((i, *d))
    })
    .unwrap();
    assert_eq!(header.weight, up.weight);
    assert_eq!(header.metrics, up.metrics);
    assert_eq!(header.rows as usize, up.items.len());
    // The same messages whichever the framing: the same header, payload bytes and rows.
    assert_eq!(
        (h.weight, h.metrics, h.rows),
        (header.weight, header.metrics, header.rows)
    );
    assert_eq!(h.payload, header.payload);
    assert!(packets.len() < bytes.len());
    assert_eq!(
        in_process
            .iter()
            .map(|(i, d)| (*i, d.map(f32::to_bits)))
            .collect::<Vec<_>>(),
        got.iter()
            .map(|(i, d)| (*i, d.map(f32::to_bits)))
            .collect::<Vec<_>>()
    );

    // Any single flipped bit in the frames is refused as a whole.
    for pos in (0..bytes.len()).step_by(97) {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x10;
        assert!(
            decode_update::<K>(Framing::Stream, &bad, 3, 11, &mut buf, |_, _, _| {}).is_err(),
            "flip at byte {pos} of {} was accepted",
            bytes.len()
        );
    }
    (sent, got)
}

#[test]
fn f32_updates_arrive_bit_exact_for_every_device_scalar() {
    fn check<S: Scalar>() {
        let (sent, got) = round_trip::<S>(RowEncoding::F32);
        assert!(!sent.is_empty());
        assert_eq!(sent.len(), got.len());
        for ((si, sd), (gi, gd)) in sent.iter().zip(&got) {
            assert_eq!(si, gi);
            assert_eq!(sd.map(f32::to_bits), gd.map(f32::to_bits), "item {si}");
        }
    }
    check::<f32>();
    check::<Q16>();
    check::<Q12>();
}

#[test]
fn quantised_updates_arrive_within_half_a_step() {
    for (encoding, levels) in [(RowEncoding::I16, 32767.0f32), (RowEncoding::I8, 127.0)] {
        let (sent, got) = round_trip::<f32>(encoding);
        for ((si, sd), (gi, gd)) in sent.iter().zip(&got) {
            assert_eq!(si, gi);
            let max = sd.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let half_step = max / levels / 2.0;
            for (a, b) in sd.iter().zip(gd) {
                assert!(
                    (a - b).abs() <= half_step * 1.0001 + f32::EPSILON * max,
                    "{encoding:?} item {si}: sent {a}, got {b}, half step {half_step}"
                );
            }
        }
    }
}
