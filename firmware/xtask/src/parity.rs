//! Fidelity over many random rounds: the update bytes (or the refusal) a QEMU board running
//! the firmware's protocol loop sends equal what `fedrecon-core` computes and encodes on the
//! host, for random clients (20–300 ratings) and random configurations (learning rates,
//! epochs, step caps, batch sizes, shuffle seeds, splits, biases, example caps, row
//! encodings both ways), in f32 and Q16.16.
//!
//! Every request goes into one file (`parity.in`) before QEMU boots the `parity` image once;
//! the board serves it round after round through semihosting (`src/semihosting_link.rs`) and
//! writes its answers to `parity.out`, which is compared frame by frame with the host's.
//! The files are in `firmware/target/parity/`; with `PARITY_DUMP=1` a difference also prints
//! the first differing frame decoded on both sides.

use fedrecon_core::rng::DeviceRng;
use fedrecon_core::wire::{
    ErrorMsg, FirmwareVersion, Hello, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, RoundMode,
    RoundStart, RowEncoding, RowStream, UpdateInfo, Version, encode_item_rows, encode_ratings,
    encode_update, next_frame, update_buf_len,
};
use fedrecon_core::{
    DenseRows, Device, ModelConfig, Q16, RoundConfig, Scalar, ScalarKind, SplitConfig, Weighting,
};
use fedrecon_qemu::{Machine, Qemu};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The parity images' K and N (src/parity.rs).
const K: usize = 50;
const N: usize = 300;

/// One random round: a client, its rows, a configuration.
struct Case {
    items: Vec<u32>,
    ratings: Vec<f32>,
    start: RoundStart,
    /// Rows of the rated items (ascending ids), as `f32` before the `down` encoding.
    rows: Vec<(u32, [f32; K])>,
}

fn pick<T: Copy>(rng: &mut DeviceRng, xs: &[T]) -> T {
    xs[rng.below(xs.len() as u32) as usize]
}

fn uniform(rng: &mut DeviceRng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.unit_f32()
}

fn maybe<T>(rng: &mut DeviceRng, v: impl FnOnce(&mut DeviceRng) -> T) -> Option<T> {
    if rng.below(2) == 0 {
        None
    } else {
        Some(v(rng))
    }
}

fn random_case(rng: &mut DeviceRng, round: u32) -> Case {
    let n = 20 + rng.below((N - 20 + 1) as u32) as usize;
    let num_items = n as u32 + rng.below(4000);
    // Distinct items in random order (a client's ratings arrive in any order).
    let mut pool: Vec<u32> = (0..num_items).collect();
    rng.shuffle(&mut pool);
    let items: Vec<u32> = pool[..n].to_vec();
    let half_steps = rng.below(2) == 0;
    let ratings: Vec<f32> = (0..n)
        .map(|_| {
            if half_steps {
                1.0 + 0.5 * rng.below(9) as f32
            } else {
                uniform(rng, 0.5, 5.0)
            }
        })
        .collect();
    let scale = pick(rng, &[0.01f32, 0.05, 0.1, 0.5]);
    let mut rated = items.clone();
    rated.sort_unstable();
    let rows = rated
        .iter()
        .map(|&i| (i, std::array::from_fn(|_| uniform(rng, -scale, scale))))
        .collect();
    let (lr1, lr2) = (uniform(rng, 0.0, 2.0), uniform(rng, 0.0, 2.0));
    let config = RoundConfig {
        split: SplitConfig {
            batch_size: pick(rng, &[1u16, 2, 3, 5, 8, 16, 32, 64]),
            max_examples: maybe(rng, |r| 10 + r.below(300) as u16),
            shuffle_seed: maybe(rng, |r| u64::from(r.next_u32())),
            split_dataset: rng.below(4) != 0,
            recon_epochs: 1 + rng.below(3) as u16,
            recon_steps_max: maybe(rng, |r| 1 + r.below(60) as u16),
            post_epochs: 1 + rng.below(3) as u16,
            post_steps_max: maybe(rng, |r| 1 + r.below(60) as u16),
        },
        recon_lr: pick(rng, &[0.01f32, 0.1, 0.5, 1.0, lr1]),
        post_lr: pick(rng, &[0.01f32, 0.1, 0.5, 1.0, lr2]),
        user_l2: pick(rng, &[0.0f32, 0.0, 0.01, 0.1]),
        init_scale: pick(rng, &[0.05f32, 0.05, 0.01, 0.1]),
        weighting: pick(rng, &[Weighting::Examples, Weighting::Uniform]),
        accuracy_threshold: pick(rng, &[0.5f32, 0.25, 1.0]),
        model: ModelConfig {
            user_bias: rng.below(2) == 0,
            // The images cache no item biases (a typed refusal; checked by the host tests).
            item_bias: false,
            global_mean: maybe(rng, |r| uniform(r, 2.5, 4.0)),
        },
    };
    let encodings = [RowEncoding::F32, RowEncoding::I16, RowEncoding::I8];
    let start = RoundStart {
        round,
        seed: u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32()),
        mode: RoundMode::Train,
        config,
        num_items,
        rows: n as u32,
        down: pick(rng, &encodings),
        up: pick(rng, &encodings),
    };
    Case {
        items,
        ratings,
        start,
        rows,
    }
}

fn sink(out: &mut Vec<u8>) -> impl FnMut(&[u8]) -> Result<(), ()> + '_ {
    move |f: &[u8]| {
        out.extend_from_slice(f);
        Ok(())
    }
}

/// The case's request frames (ratings, round start, item rows) appended to `out`.
fn request(case: &Case, buf: &mut [u8], out: &mut Vec<u8>) -> Result<(), String> {
    encode_ratings(&case.items, &case.ratings, buf, sink(out)).map_err(|e| format!("{e:?}"))?;
    let n = Message::RoundStart(case.start)
        .encode(buf)
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(&buf[..n]);
    encode_item_rows::<f32, K, ()>(
        case.start.round,
        case.start.down,
        false,
        case.rows.len(),
        |i| (case.rows[i].0, &case.rows[i].1, None),
        buf,
        sink(out),
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// What the board must answer, computed by core on the host: the rows are decoded from the
/// request's own frames (so quantised encodings dequantise exactly as on the board), then
/// the round runs in `S`; an update is encoded in the round's `up` encoding, a failure is the
/// `Error` the board sends.
fn expected<S: Scalar>(case: &Case, request: &[u8], buf: &mut [u8]) -> Result<Vec<u8>, String> {
    let start = case.start;
    let mut matrix = vec![[S::ZERO; K]; start.num_items as usize];
    let mut stream = RowStream::new(start.round, 0, start.down, false, start.rows);
    let mut rest = request;
    while !rest.is_empty() {
        let (used, frame) = next_frame(rest, buf);
        rest = &rest[used..];
        let Some(frame) = frame.map_err(|e| e.to_string())? else {
            continue;
        };
        if let Message::ItemRows(chunk) = Message::decode::<K>(&frame).map_err(|e| e.to_string())? {
            stream
                .accept::<K>(&chunk, |item, row, _| {
                    for (d, s) in matrix[item as usize].iter_mut().zip(row) {
                        *d = S::from_f32(*s);
                    }
                })
                .map_err(|e| e.to_string())?;
        }
    }
    if !stream.is_complete() {
        return Err("internal: the request's rows did not decode".into());
    }
    let mut dev = Box::new(Device::<S, N, K>::new());
    for (&i, &r) in case.items.iter().zip(&case.ratings) {
        dev.data_mut()
            .push(i, S::from_f32(r), start.num_items)
            .map_err(|e| e.to_string())?;
    }
    let mut want = Vec::new();
    match dev.train(&DenseRows::new(&matrix), &start.config, start.seed) {
        Ok(update) => {
            let info = UpdateInfo {
                round: start.round,
                client: 0,
            };
            encode_update(info, &update, start.up, buf, sink(&mut want))
                .map_err(|e| format!("{e:?}"))?;
        }
        Err(e) => {
            let n = Message::Error(ErrorMsg::from_core(start.round, &e))
                .encode(buf)
                .map_err(|e| e.to_string())?;
            want.extend_from_slice(&buf[..n]);
        }
    }
    Ok(want)
}

/// What one case's expected answer is: a refusal (a single `Error` frame) or an update (an
/// `UpdateBegin` frame, then its chunks). Decodes the first frame: byte 1 of an encoded frame
/// is COBS-stuffed header, not the kind, so the bytes cannot be read in place.
fn is_refusal(answer: &[u8], buf: &mut [u8]) -> Result<bool, String> {
    let n_frames = frames(answer).len();
    let (_, frame) = next_frame(answer, buf);
    let frame = frame
        .map_err(|e| format!("internal: the expected answer does not decode: {e}"))?
        .ok_or("internal: the expected answer is empty")?;
    match Message::decode::<K>(&frame).map_err(|e| e.to_string())? {
        Message::Error(_) if n_frames == 1 => Ok(true),
        Message::UpdateBegin(_) => Ok(false),
        m => Err(format!(
            "internal: an expected answer of {n_frames} frames starts with {:?}",
            m.kind()
        )),
    }
}

/// Splits `bytes` into frames (delimiter included).
fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == 0 {
            if i > start {
                out.push(&bytes[start..=i]);
            }
            start = i + 1;
        }
    }
    out
}

/// Counts of one scalar's run.
pub struct Outcome {
    pub cases: usize,
    pub updates: usize,
    pub refusals: usize,
    pub seconds: f64,
}

/// Runs `cases` random rounds (seeded by `seed`) through the parity image `elf` computing in
/// `S` on `machine`, in a scratch directory `work`.
pub fn run<S: Scalar>(
    machine: Machine,
    elf: &Path,
    work: &Path,
    cases: usize,
    seed: u64,
) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let mut rng = DeviceRng::new(seed);
    let mut buf = vec![0u8; update_buf_len(K)];
    let hello = Message::Hello(Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: S::KIND,
        k: K as u32,
        max_examples: 0,
        max_rows: 0,
        max_frame: 1 << 16,
        encodings: 7,
        firmware: FirmwareVersion::default(),
    });
    let mut input = Vec::new();
    let n = hello.encode(&mut buf).map_err(|e| e.to_string())?;
    input.extend_from_slice(&buf[..n]);
    let mut wants = Vec::with_capacity(cases);
    let mut refusals = 0;
    for c in 0..cases {
        let case = random_case(&mut rng, c as u32 + 1);
        let mut req = Vec::new();
        request(&case, &mut buf, &mut req)?;
        let want = expected::<S>(&case, &req, &mut buf)?;
        if is_refusal(&want, &mut buf)? {
            refusals += 1;
        }
        input.extend_from_slice(&req);
        wants.push((case, want));
    }
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    fs::write(work.join("parity.in"), &input).map_err(|e| format!("parity.in: {e}"))?;
    let _ = fs::remove_file(work.join("parity.out"));

    let elf = fs::canonicalize(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let done = Qemu::new(machine, elf)
        .current_dir(work)
        .run(Duration::from_secs(300))
        .map_err(|e| e.to_string())?;
    if done.timed_out {
        return Err("the parity image timed out".into());
    }
    if !done.success() {
        return Err(format!(
            "the parity image exited with {:?}: {}",
            done.code,
            done.output()
        ));
    }
    let out = fs::read(work.join("parity.out")).map_err(|e| format!("parity.out: {e}"))?;
    let got = frames(&out);
    let mut at = match got.first() {
        Some(f) => {
            let (_, frame) = next_frame(f, &mut buf);
            let frame = frame.map_err(|e| e.to_string())?.ok_or("empty frame")?;
            match Message::decode::<K>(&frame).map_err(|e| e.to_string())? {
                Message::Hello(h) if h.k == K as u32 && h.scalar == S::KIND => 1,
                m => return Err(format!("expected the board's Hello, got {m:?}")),
            }
        }
        None => return Err("the board answered nothing".into()),
    };
    for (i, (case, want)) in wants.iter().enumerate() {
        let want_frames = frames(want);
        let end = at + want_frames.len();
        if end > got.len() || got[at..end] != want_frames[..] {
            if std::env::var_os("PARITY_DUMP").is_some() {
                let g: Vec<u8> = got[at..end.min(got.len())].concat();
                let _ = fs::write(work.join("got.bin"), &g);
                let _ = fs::write(work.join("want.bin"), want);
                for (j, (a, b)) in got[at..].iter().zip(&want_frames).enumerate() {
                    if a != b {
                        let (_, fa) = next_frame(a, &mut buf);
                        let ma = format!("{:?}", fa.map(|f| f.map(|f| Message::decode::<K>(&f))));
                        let mut buf2 = vec![0u8; update_buf_len(K)];
                        let (_, fb) = next_frame(b, &mut buf2);
                        let mb = format!("{:?}", fb.map(|f| f.map(|f| Message::decode::<K>(&f))));
                        eprintln!("frame {j}:\n board {ma}\n host  {mb}");
                        break;
                    }
                }
            }
            return Err(format!(
                "{:?} case {i} differs: {} ratings, down {:?}, up {:?}, seed {}, config {:?}\n\
                 board sent {} frames here, the host expects {}",
                S::KIND,
                case.items.len(),
                case.start.down,
                case.start.up,
                case.start.seed,
                case.start.config,
                got.len().saturating_sub(at).min(want_frames.len()),
                want_frames.len()
            ));
        }
        at = end;
    }
    if at != got.len() {
        return Err(format!(
            "the board sent {} frames more than expected",
            got.len() - at
        ));
    }
    // The random cases must exercise both answers; a counter that never matched (it once
    // compared a COBS-stuffed byte with the Error kind) would report 0 refusals.
    if refusals == 0 || refusals == cases {
        return Err(format!(
            "{:?}: {refusals} refusals in {cases} cases: the cases must include both updates \
             and refusals",
            S::KIND
        ));
    }
    Ok(Outcome {
        cases,
        updates: cases - refusals,
        refusals,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `fw-parity`: `cases_f32` f32 and `cases_q16` Q16.16 rounds over their images in `images`
/// (a `build` output directory), on `machine`.
pub fn main(
    machine: Machine,
    images: &Path,
    work: &Path,
    (cases_f32, cases_q16): (usize, usize),
) -> Result<(), String> {
    let mut total = 0;
    for (kind, bin, cases, seed) in [
        (ScalarKind::F32, "parity", cases_f32, 0x0f32_u64),
        (ScalarKind::Q16_16, "parity-q16", cases_q16, 0x0016_u64),
    ] {
        let elf = images.join(bin);
        let o = match kind {
            ScalarKind::F32 => run::<f32>(machine, &elf, work, cases, seed)?,
            _ => run::<Q16>(machine, &elf, work, cases, seed)?,
        };
        println!(
            "fw-parity {kind:?} on {machine}: {} random rounds ({} updates, {} refusals) \
             through QEMU, all byte-identical to fedrecon-core on the host ({:.1} s)",
            o.cases, o.updates, o.refusals, o.seconds
        );
        total += o.cases;
    }
    println!("fw-parity: {total} random cases, all identical");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal counter decodes answers: an `Error` frame counts, an update does not.
    #[test]
    fn refusals_are_counted_by_decoding_the_answer() {
        let mut buf = vec![0u8; update_buf_len(K)];
        let mut rng = DeviceRng::new(5);
        let case = random_case(&mut rng, 1);
        let err = fedrecon_core::Error::MissingItemRow { item: 0 };
        let n = Message::Error(ErrorMsg::from_core(1, &err))
            .encode(&mut buf)
            .unwrap();
        let refusal = buf[..n].to_vec();
        assert_eq!(is_refusal(&refusal, &mut buf), Ok(true));
        let mut update = Vec::new();
        let deltas = [[0.5f32; K]];
        let upd = fedrecon_core::Update::<f32, K> {
            items: &[3],
            deltas: &deltas,
            bias_deltas: None,
            weight: 1,
            metrics: Default::default(),
        };
        encode_update(
            UpdateInfo::default(),
            &upd,
            RowEncoding::F32,
            &mut buf,
            sink(&mut update),
        )
        .unwrap();
        assert_eq!(is_refusal(&update, &mut buf), Ok(false));
        // An update without rows is one frame too, and still not a refusal.
        let empty = fedrecon_core::Update::<f32, K> {
            items: &[],
            deltas: &[],
            ..upd
        };
        let mut one = Vec::new();
        encode_update(
            UpdateInfo::default(),
            &empty,
            RowEncoding::F32,
            &mut buf,
            sink(&mut one),
        )
        .unwrap();
        assert_eq!(frames(&one).len(), 1);
        assert_eq!(is_refusal(&one, &mut buf), Ok(false));
        // A request is neither.
        let mut req = Vec::new();
        request(&case, &mut buf, &mut req).unwrap();
        assert!(is_refusal(&req, &mut buf).is_err());
    }
}
