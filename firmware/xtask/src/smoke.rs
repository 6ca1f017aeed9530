//! One training round through the QEMU board's serial link, compared byte for byte with the
//! host's own round: the firmware, the UART driver and the socket recipe in one check.

use fedrecon_core::wire::{
    FirmwareVersion, Hello, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, RoundMode, RoundStart,
    RowEncoding, UpdateInfo, Version, encode_item_rows, encode_ratings, encode_update,
    max_frame_buf_len, next_frame, update_buf_len,
};
use fedrecon_core::{DenseRows, Device, RoundConfig, ScalarKind, SplitConfig};
use fedrecon_qemu::{Machine, Qemu, Running};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The qemu image's K and N (src/bin/qemu.rs).
const K: usize = 50;
const N: usize = 300;
const FB: usize = max_frame_buf_len(K);
const ITEMS: u32 = 3706;

/// Boots `elf` on mps2-an386 with UART0 as a socket server that waits for us, and connects.
/// With the image's WFI-based UART waits, `-icount` makes the link faster.
fn boot(elf: &Path) -> Result<(Running, TcpStream), String> {
    let port = Qemu::free_port().map_err(|e| e.to_string())?;
    let mut qemu = Qemu::new(Machine::Mps2An386, elf)
        .serial_socket(port)
        .icount(0)
        .spawn(Stdio::inherit(), Stdio::inherit())
        .map_err(|e| e.to_string())?;
    let link = qemu
        .connect_serial(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok((qemu, link))
}

/// Reads frames until `n` have arrived; returns their concatenated bytes.
fn read_frames(s: &mut TcpStream, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut got = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        let r = s
            .read(&mut buf)
            .map_err(|e| format!("reading UART0: {e}"))?;
        if r == 0 {
            return Err("QEMU closed the link".into());
        }
        pending.extend_from_slice(&buf[..r]);
        while let Some(z) = pending.iter().position(|&b| b == 0) {
            let frame: Vec<u8> = pending.drain(..=z).collect();
            if frame.len() > 1 {
                got.push(frame);
            }
        }
    }
    Ok(got)
}

/// A frame sink appending to `out`.
fn sink(out: &mut Vec<u8>) -> impl FnMut(&[u8]) -> Result<(), ()> + '_ {
    move |f: &[u8]| {
        out.extend_from_slice(f);
        Ok(())
    }
}

/// Boots the qemu image and checks one round's update against the host's.
pub fn run(elf: &Path) -> Result<(), String> {
    // A client with 300 ratings on distinct items and a deterministic matrix.
    let items: Vec<u32> = (0..N as u32).map(|i| (i * 37 + 11) % ITEMS).collect();
    let ratings: Vec<f32> = (0..N).map(|i| (1 + (7 * i + 3) % 5) as f32).collect();
    let mut rng = fedrecon_core::rng::DeviceRng::new(5);
    let matrix: Vec<[f32; K]> = (0..ITEMS)
        .map(|_| std::array::from_fn(|_| 0.1 * (rng.unit_f32() - 0.5)))
        .collect();
    let mut rated = items.clone();
    rated.sort_unstable();
    let config = RoundConfig {
        split: SplitConfig {
            shuffle_seed: Some(42),
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    };
    let start = RoundStart {
        round: 1,
        seed: 1234,
        mode: RoundMode::Train,
        config,
        num_items: ITEMS,
        rows: rated.len() as u32,
        down: RowEncoding::F32,
        up: RowEncoding::F32,
    };

    let mut out = Vec::new();
    let mut buf = vec![0u8; FB];
    let hello = Message::Hello(Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: ScalarKind::F32,
        k: K as u32,
        max_examples: 0,
        max_rows: 0,
        max_frame: 1 << 16,
        encodings: 7,
        firmware: FirmwareVersion::default(),
    });
    let n = hello.encode(&mut buf).map_err(|e| e.to_string())?;
    out.extend_from_slice(&buf[..n]);
    encode_ratings(&items, &ratings, &mut buf, sink(&mut out)).map_err(|e| format!("{e:?}"))?;
    let n = Message::RoundStart(start)
        .encode(&mut buf)
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(&buf[..n]);
    encode_item_rows::<f32, K, ()>(
        1,
        RowEncoding::F32,
        false,
        rated.len(),
        |i| (rated[i], &matrix[rated[i] as usize], None),
        &mut buf,
        sink(&mut out),
    )
    .map_err(|e| format!("{e:?}"))?;

    // The host's own round: what the board must send, byte for byte.
    let mut dev = Box::new(Device::<f32, N, K>::new());
    for (&i, &r) in items.iter().zip(&ratings) {
        dev.data_mut()
            .push(i, r, ITEMS)
            .map_err(|e| e.to_string())?;
    }
    let update = dev
        .train(&DenseRows::new(&matrix), &config, 1234)
        .map_err(|e| e.to_string())?;
    let mut ubuf = vec![0u8; update_buf_len(K)];
    let mut want = Vec::new();
    let info = UpdateInfo {
        round: 1,
        client: 0,
    };
    encode_update(info, &update, RowEncoding::F32, &mut ubuf, sink(&mut want))
        .map_err(|e| format!("{e:?}"))?;
    let want_frames = 1 + update.items.len().div_ceil(8);

    let t0 = Instant::now();
    let (_qemu, mut link) = boot(elf)?;
    link.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    link.write_all(&out)
        .map_err(|e| format!("writing UART0: {e}"))?;
    let frames = read_frames(&mut link, 1 + want_frames)?;
    let mut fb = vec![0u8; FB];
    let (_, first) = next_frame(&frames[0], &mut fb);
    let first = first.map_err(|e| e.to_string())?.ok_or("empty frame")?;
    match Message::decode::<K>(&first).map_err(|e| e.to_string())? {
        Message::Hello(h) if h.k == K as u32 => {}
        m => return Err(format!("expected the board's Hello, got {m:?}")),
    }
    let got: Vec<u8> = frames[1..].concat();
    if got != want {
        return Err(format!(
            "the board's update ({} bytes) differs from the host's ({} bytes)",
            got.len(),
            want.len()
        ));
    }
    println!(
        "qemu-smoke: board answered Hello and a 300-rating round; update of {} rows, {} bytes, \
         identical to fedrecon-core's on the host ({:.1} s, {} bytes sent)",
        update.items.len(),
        got.len(),
        t0.elapsed().as_secs_f64(),
        out.len()
    );
    Ok(())
}
