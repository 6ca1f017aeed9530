//! The authentication table of `cargo footprint`: what sealed frames (core/WIRE.md 7) add to
//! the footprint round's traffic on each target (the `auth-cost` image,
//! firmware/src/auth_cost.rs): bytes on the link and instructions on the device.

use crate::{BUILDS, field, num};
use fedrecon_qemu::Qemu;
use std::path::PathBuf;
use std::time::Duration;

/// Runs the `auth-cost` image of every build and prints its table.
pub(crate) fn report(dirs: &[PathBuf]) -> Result<(), String> {
    println!();
    println!(
        "Authenticated frames (core/WIRE.md 7, ChaCha20-Poly1305) on the footprint round's \
         traffic: the device opens RoundStart + 38 ItemRows chunks (300 rows) and seals \
         UpdateBegin + 19 UpdateRows chunks (150 rows), f32, K = 50 (firmware/src/auth_cost.rs)"
    );
    println!(
        "| build (target) | frames down / up | sealed bytes down / up (+20 B a frame) | open − check (instructions) | seal − plain encode (instructions) | added / round |"
    );
    println!("|---|---|---|---|---|---|");
    for (b, dir) in BUILDS.iter().zip(dirs) {
        let elf = dir.join("auth-cost");
        let done = Qemu::new(b.machine, &elf)
            .icount(0)
            .run(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        let out = done.output();
        if done.timed_out || !done.success() {
            return Err(format!("{} on {}: {out}", elf.display(), b.machine));
        }
        let line = out
            .lines()
            .find(|l| l.starts_with("auth "))
            .ok_or_else(|| format!("{}: no auth line in: {out}", elf.display()))?;
        let per = num(line, "insn_per_tick")?;
        let ticks = |k: &str| num(line, k).map(|t| t * per);
        let open = ticks("open_ticks")?.saturating_sub(ticks("check_ticks")?);
        let seal = ticks("seal_ticks")?.saturating_sub(ticks("plain_ticks")?);
        println!(
            "| {} ({}) | {} / {} | {} / {} | {open} | {seal} | {} |",
            b.name,
            b.target,
            field(line, "frames_down")?,
            field(line, "frames_up")?,
            field(line, "bytes_down")?,
            field(line, "bytes_up")?,
            open + seal,
        );
    }
    Ok(())
}
