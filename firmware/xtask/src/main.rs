//! Host side of the firmware: builds the images and measures them.
//!
//! `fedrecon-firmware-xtask build`
//!     Builds the firmware images in release mode ([`BUILDS`]): every image for
//!     `thumbv7em-none-eabihf` twice, linked for QEMU mps2-an386 (4 MB flash, 4 MB RAM) and
//!     for the nRF52840 (1 MB flash, 256 KB RAM, feature `board-nrf52840`), so the linker
//!     proves the board's budget; the footprint and parity images for the FPU-less
//!     `thumbv7m-none-eabi` and `thumbv6m-none-eabi` (QEMU mps2-an385, Cortex-M3) and
//!     `riscv32imc-unknown-none-elf` (QEMU riscv32 virt). Images are copied to
//!     `firmware/target/images/<build>/`. The root alias `cargo build-fw` runs this.
//!
//! `fedrecon-firmware-xtask footprint`
//!     `build`, then for the six footprint images (f32, Q16.16, Q3.12, each with SGD and with exact
//!     reconstruction) and every build:
//!     section sizes from the ELF, and one QEMU run each (`-icount shift=0`, twice, to check
//!     the figures are deterministic) for the peak stack and the instructions of one training
//!     round. Prints one table. Fails if an image does not run, is not deterministic, gives an
//!     update whose bits differ from another target's in the same scalar (soft-float f32 must
//!     equal the FPU's), or does not fit its layout (the nRF52840: statics + peak stack over
//!     256 KB, or flash over 1 MB). The root alias `cargo footprint` runs this.
//!
//! `fedrecon-firmware-xtask qemu-smoke`
//!     `build`, then boots the `qemu` image with UART0 on a TCP socket (the recipe of
//!     firmware/README.md), plays one training round through it and checks that the update's
//!     bytes equal what fedrecon-core encodes for the same round on the host.
//!
//! `fedrecon-firmware-xtask parity`
//!     `build`, then hundreds of random rounds (random clients and configurations, f32 and
//!     Q16.16) through the `parity` images in one QEMU boot each, on the Cortex-M4F and on the
//!     FPU-less Cortex-M3 and RV32IMC; every answer must equal fedrecon-core's bytes on the
//!     host (`parity.rs`). The root alias `cargo fw-parity`.

mod auth_cost;
mod parity;
mod smoke;

use fedrecon_qemu::{Machine, Qemu};
use object::{Object, ObjectSection, SectionKind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;
use std::{env, fs};

const KIB: u64 = 1024;

/// One build of the images: a target, a memory layout, and the QEMU machine that runs them.
struct Build {
    /// The directory under `target/images/` and the label in the tables.
    name: &'static str,
    target: &'static str,
    features: &'static [&'static str],
    /// The binaries to build, as lists of names; `None` for all of them.
    bins: Option<&'static [&'static [&'static str]]>,
    machine: Machine,
    /// The layout's flash and RAM, which every footprint image must fit.
    flash: u64,
    ram: u64,
}

/// The images that build for every target: they need nothing but the core and semihosting
/// (the `qemu` image drives the mps2 UART, the nRF image its HAL).
const PORTABLE_BINS: &[&str] = &[
    "footprint",
    "footprint-q16",
    "footprint-q12",
    "footprint-exact",
    "footprint-exact-q16",
    "footprint-exact-q12",
    "parity",
    "parity-q16",
    "auth-cost",
];

const BUILDS: [Build; 5] = [
    Build {
        name: "mps2-an386",
        target: "thumbv7em-none-eabihf",
        features: &[],
        bins: None,
        machine: Machine::Mps2An386,
        flash: 4096 * KIB,
        ram: 4096 * KIB,
    },
    // The nRF52840's memory map is a subset of mps2's (flash at 0, RAM at 0x2000_0000), so its
    // images run on the an386 too.
    Build {
        name: "nrf52840",
        target: "thumbv7em-none-eabihf",
        features: &["board-nrf52840"],
        bins: None,
        machine: Machine::Mps2An386,
        flash: 1024 * KIB,
        ram: 256 * KIB,
    },
    Build {
        name: "mps2-an385-thumbv7m",
        target: "thumbv7m-none-eabi",
        features: &[],
        // The QEMU board images too: they drive the mps2 UART the an385 shares with the
        // an386 (boards without an FPU in simulator rounds).
        bins: Some(&[PORTABLE_BINS, &QEMU_BOARD_IMAGES]),
        machine: Machine::Mps2An385,
        flash: 4096 * KIB,
        ram: 4096 * KIB,
    },
    // ARMv6-M code (the RP2040's Cortex-M0+) on the Cortex-M3: the instruction set the Pico
    // runs, counted by the same SysTick.
    Build {
        name: "mps2-an385-thumbv6m",
        target: "thumbv6m-none-eabi",
        features: &[],
        bins: Some(&[PORTABLE_BINS]),
        machine: Machine::Mps2An385,
        flash: 4096 * KIB,
        ram: 4096 * KIB,
    },
    Build {
        name: "riscv32-virt",
        target: "riscv32imc-unknown-none-elf",
        features: &[],
        bins: Some(&[PORTABLE_BINS]),
        machine: Machine::Riscv32Virt,
        flash: 4096 * KIB,
        ram: 4096 * KIB,
    },
];

/// Footprint images: (binary, scalar label, RAM goal in bytes).
const FOOTPRINTS: [(&str, &str, u64); 6] = [
    ("footprint", "f32", 128 * KIB),
    ("footprint-q16", "Q16.16", 64 * KIB),
    ("footprint-q12", "Q3.12", 64 * KIB),
    ("footprint-exact", "f32, exact reconstruction", 128 * KIB),
    (
        "footprint-exact-q16",
        "Q16.16, exact reconstruction",
        64 * KIB,
    ),
    (
        "footprint-exact-q12",
        "Q3.12, exact reconstruction",
        64 * KIB,
    ),
];
/// Trained rows the footprint images' `Device` holds (`R` in firmware/src/footprint.rs).
const FOOT_R: u64 = 160;
const FLASH_GOAL: u64 = 64 * KIB;
/// Flash outside `.text + .rodata` (vector table, `.data` initialisers) an image may use. The
/// device workspace is tens of KB and must start all-zero (`.bss`, free in flash); a change
/// that gives it a non-zero initial byte moves it into `.data` and trips this.
const MAX_NON_CODE_FLASH: u64 = 4 * KIB;
const INSN_GOAL: u64 = 2_000_000;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => match args.get(1).map(String::as_str) {
            None => build().map(|_| ()),
            Some("--k") => args
                .get(2)
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|k| (1..=1024).contains(k))
                .ok_or_else(|| "build --k K: K must be a width between 1 and 1024".to_string())
                .and_then(build_k),
            Some(other) => Err(format!("build: unknown argument {other} (expected --k K)")),
        },
        Some("footprint") => footprint(),
        Some("qemu-smoke") => build().and_then(|dirs| smoke::run(&dirs[0].join("qemu"))),
        Some("parity") => build().and_then(|dirs| parity_everywhere(&dirs)),
        _ => Err(
            "usage: fedrecon-firmware-xtask (build [--k K] | footprint | qemu-smoke | parity)"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds every [`BUILDS`] entry, then the nRF52840-DK image; returns the `images/<build>`
/// directories in [`BUILDS`] order.
fn build() -> Result<Vec<PathBuf>, String> {
    let fw = firmware_dir();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut dirs = Vec::new();
    for b in &BUILDS {
        eprintln!("building firmware images for {} ({})", b.name, b.target);
        let mut cmd = Command::new(&cargo);
        // Run in firmware/ so its .cargo/config.toml applies.
        cmd.current_dir(&fw)
            .args(["build", "--release", "--locked", "--target", b.target]);
        match b.bins {
            None => {
                cmd.arg("--bins");
            }
            Some(lists) => {
                for bin in lists.iter().copied().flatten() {
                    cmd.args(["--bin", bin]);
                }
            }
        }
        if !b.features.is_empty() {
            cmd.args(["--features", &b.features.join(",")]);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("firmware build for {} failed", b.name));
        }
        // Builds of one target share a target directory, where the last build's binaries are
        // the ones at the top of release/; keep each build's copy apart.
        let release = fw.join("target").join(b.target).join("release");
        let out = fw.join("target").join("images").join(b.name);
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        for entry in fs::read_dir(&release).map_err(|e| format!("{}: {e}", release.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let wanted = b
                .bins
                .is_none_or(|lists| lists.iter().any(|bins| bins.contains(&name)));
            if wanted && path.is_file() && !name.contains('.') && !name.starts_with("lib") {
                fs::copy(&path, out.join(name)).map_err(|e| format!("copy {name}: {e}"))?;
            }
        }
        dirs.push(out);
    }
    // The nRF52840-DK images (UART and USB): their board support (HAL, defmt, USB) is behind
    // its own feature, so they are one more build of those binaries alone, with one key.
    eprintln!("building the nRF52840-DK images");
    let out = fw.join("target").join("images").join("nrf52840-dk");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (device_id, device_key) = device_key(&out)?;
    let status = Command::new(&cargo)
        .current_dir(&fw)
        .env("FEDRECON_DEVICE_ID", &device_id)
        .env("FEDRECON_DEVICE_KEY", &device_key)
        .args([
            "build",
            "--release",
            "--locked",
            "--features",
            "nrf52840-dk",
        ])
        .args(["--bin", DK_IMAGE, "--bin", DK_USB_IMAGE])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("the nRF52840-DK image did not build".into());
    }
    let release = fw.join("target").join(DK_TARGET).join("release");
    for image in [DK_IMAGE, DK_USB_IMAGE] {
        fs::copy(release.join(image), out.join(image)).map_err(|e| format!("copy {image}: {e}"))?;
    }
    Ok(dirs)
}

/// The nRF52840-DK image's device id and key (core/WIRE.md 7): `FEDRECON_DEVICE_ID` and
/// `FEDRECON_DEVICE_KEY` when set, else the pair kept in `out/enrolment.txt`, else a fresh
/// random key (device id 1) written there, so the image is rebuilt only when the key changes.
/// `enrolment.txt` is the line the simulator's `--enrolment FILE` needs for this board.
fn device_key(out: &Path) -> Result<(String, String), String> {
    let file = out.join("enrolment.txt");
    let (id, key) = match (
        env::var("FEDRECON_DEVICE_ID"),
        env::var("FEDRECON_DEVICE_KEY"),
    ) {
        (Ok(id), Ok(key)) => (id, key),
        _ => match fs::read_to_string(&file) {
            Ok(text) => {
                let line = text
                    .lines()
                    .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .unwrap_or("");
                let mut f = line.split_whitespace();
                match (f.next(), f.next()) {
                    (Some(id), Some(key)) => (id.to_string(), key.to_string()),
                    _ => return Err(format!("{}: expected `ID KEY`", file.display())),
                }
            }
            Err(_) => {
                let mut key = [0u8; 32];
                fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
                    .map_err(|e| format!("drawing a device key from /dev/urandom: {e}"))?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                ("1".to_string(), hex)
            }
        },
    };
    let text = format!(
        "# The nRF52840-DK image's device key (core/WIRE.md 7): pass this file to\n\
         # `fedrecon train --device PORT --enrolment FILE`. Secret: keep it out of version control.\n\
         {id} {key}\n"
    );
    if fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok((id, key))
}

/// The QEMU board images, one per scalar (`src/qemu_board.rs`).
const QEMU_BOARD_IMAGES: [&str; 3] = ["qemu", "qemu-q16", "qemu-q12"];

/// The K build matrix: the QEMU board images at width `k` (`FEDRECON_FW_K`), in
/// `target/images/mps2-an386-k{k}/`, built in their own target directory so the default
/// K = 50 build is not rebuilt after them.
fn build_k(k: usize) -> Result<(), String> {
    let fw = firmware_dir();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = fw.join("target").join(format!("k{k}"));
    eprintln!("building the QEMU board images at K = {k}");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&fw)
        .env("FEDRECON_FW_K", k.to_string())
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--release", "--locked", "--target", DK_TARGET]);
    for bin in QEMU_BOARD_IMAGES {
        cmd.args(["--bin", bin]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the QEMU board images at K = {k} did not build"));
    }
    let release = target_dir.join(DK_TARGET).join("release");
    let out = fw
        .join("target")
        .join("images")
        .join(format!("mps2-an386-k{k}"));
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for bin in QEMU_BOARD_IMAGES {
        fs::copy(release.join(bin), out.join(bin)).map_err(|e| format!("copy {bin}: {e}"))?;
    }
    eprintln!("images in {}", out.display());
    Ok(())
}

/// The nRF52840-DK image's target (firmware/.cargo/config.toml's default).
const DK_TARGET: &str = "thumbv7em-none-eabihf";

/// `parity` on the Cortex-M4F (600 f32 and 400 Q16.16 rounds), and on the FPU-less Cortex-M3
/// (thumbv7m) and RV32IMC, where every f32 operation is soft-float and must still give the
/// host's bytes (200 and 100 rounds each: the same seeds, so the first cases of the M4F's
/// run, at a third of its QEMU time).
fn parity_everywhere(dirs: &[PathBuf]) -> Result<(), String> {
    let work = firmware_dir().join("target").join("parity");
    for (b, dir) in BUILDS.iter().zip(dirs) {
        let cases = match b.name {
            "mps2-an386" => (600, 400),
            "mps2-an385-thumbv7m" | "riscv32-virt" => (200, 100),
            _ => continue,
        };
        parity::main(b.machine, dir, &work.join(b.name), cases)?;
    }
    Ok(())
}

/// The nRF52840-DK image (`src/bin/nrf52840.rs`), in `images/nrf52840-dk/`.
const DK_IMAGE: &str = "nrf52840";
/// The nRF52840-DK image over its own USB port (`src/bin/nrf52840-usb.rs`), beside it.
const DK_USB_IMAGE: &str = "nrf52840-usb";

/// Flash and RAM of the protocol images: the QEMU board and the nRF52840-DK board.
fn protocol_images(dirs: &[PathBuf]) -> Result<(), String> {
    let fw = firmware_dir();
    let images = [
        ("qemu (mps2-an386, UART0)", dirs[0].join("qemu")),
        (
            "nrf52840 (nRF52840-DK, UARTE0, defmt)",
            fw.join("target/images/nrf52840-dk").join(DK_IMAGE),
        ),
        (
            "nrf52840-usb (nRF52840-DK, USB CDC-ACM, defmt)",
            fw.join("target/images/nrf52840-dk").join(DK_USB_IMAGE),
        ),
    ];
    println!();
    println!(
        "Protocol images (f32, K = 50, N = 300): the serial protocol loop and its board support"
    );
    println!("| image | flash (text+rodata) | static RAM (data+bss) |");
    println!("|---|---|---|");
    for (label, elf) in images {
        let s = sizes(&elf)?;
        println!(
            "| {label} | {} B ({} B) | {} B ({}) |",
            s.flash,
            s.text_rodata,
            s.static_ram,
            kib(s.static_ram)
        );
    }
    Ok(())
}

/// Section sums of an image.
struct Sizes {
    /// Code and constants (`.vector_table`, `.text`, `.rodata`, riscv-rt's `.init` and `.trap`)
    /// plus the `.data` initialisers (stored in flash).
    flash: u64,
    /// `.text + .rodata` alone.
    text_rodata: u64,
    /// `.data + .bss + .uninit`.
    static_ram: u64,
}

/// Sums by section kind, not address: on QEMU riscv32 virt the image is linked into RAM (there
/// is no flash to run from), and on a real RISC-V board the same sections go to flash.
fn sizes(elf: &Path) -> Result<Sizes, String> {
    let bytes = fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    let (mut flash, mut text_rodata, mut static_ram) = (0, 0, 0);
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        let size = s.size();
        // riscv-rt's `.heap` and `.stack` are placeholders spanning the free RAM, not statics.
        if size == 0 || name == ".heap" || name == ".stack" {
            continue;
        }
        // Debug info and other non-allocated sections have kind Debug/Other/Metadata.
        match s.kind() {
            SectionKind::Text
            | SectionKind::ReadOnlyData
            | SectionKind::ReadOnlyString
            | SectionKind::ReadOnlyDataWithRel => {
                flash += size;
                if name == ".text" || name == ".rodata" {
                    text_rodata += size;
                }
            }
            // Initialised RAM is copied from flash at reset.
            SectionKind::Data => {
                flash += size;
                static_ram += size;
            }
            SectionKind::UninitializedData => static_ram += size,
            _ => {}
        }
    }
    Ok(Sizes {
        flash,
        text_rodata,
        static_ram,
    })
}

/// What one run of a footprint image printed.
#[derive(PartialEq, Eq, Debug)]
struct Run {
    ticks: u64,
    insn_per_tick: u64,
    stack_peak: u64,
    update_rows: u64,
    fnv: String,
}

impl Run {
    fn instructions(&self) -> u64 {
        self.ticks * self.insn_per_tick
    }
}

fn field<'a>(line: &'a str, key: &str) -> Result<&'a str, String> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| format!("no `{key}=` in `{line}`"))
}

fn num(line: &str, key: &str) -> Result<u64, String> {
    field(line, key)?
        .parse()
        .map_err(|e| format!("`{key}` in `{line}`: {e}"))
}

/// Boots `elf` on `machine` with deterministic instruction counting.
fn run_qemu(machine: Machine, elf: &Path) -> Result<Run, String> {
    let done = Qemu::new(machine, elf)
        .icount(0)
        .run(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    if done.timed_out {
        return Err(format!("{} on {machine}: QEMU timed out", elf.display()));
    }
    if !done.success() {
        return Err(format!(
            "{} on {machine} exited with {:?}: {}",
            elf.display(),
            done.code,
            done.output()
        ));
    }
    let out = done.output();
    let line = out
        .lines()
        .find(|l| l.starts_with("footprint "))
        .ok_or_else(|| format!("{}: no footprint line in: {out}", elf.display()))?;
    Ok(Run {
        ticks: num(line, "ticks")?,
        insn_per_tick: num(line, "insn_per_tick")?,
        stack_peak: num(line, "stack_peak")?,
        update_rows: num(line, "update_rows")?,
        fnv: field(line, "update_fnv")?.to_string(),
    })
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / KIB as f64)
}

fn mark(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

fn footprint() -> Result<(), String> {
    let dirs = build()?;
    protocol_images(&dirs)?;
    auth_cost::report(&dirs)?;
    let mut failures = Vec::new();
    println!();
    println!(
        "Footprint of one training round: K = 50, 300 ratings, 300 cached rows, R = {FOOT_R} trained \
         rows (firmware/src/footprint.rs)"
    );
    println!(
        "| scalar | build (target on QEMU machine) | flash (text+rodata) | static RAM (data+bss) | peak stack | RAM total | instructions / round | update fnv |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for (bin, label, ram_goal) in FOOTPRINTS {
        // The first run of this scalar, and the first per target.
        let mut first: Option<(&str, Run)> = None;
        let mut per_target: Vec<(&str, Run)> = Vec::new();
        for (b, dir) in BUILDS.iter().zip(&dirs) {
            let elf = dir.join(bin);
            let s = sizes(&elf)?;
            let a = run_qemu(b.machine, &elf)?;
            let again = run_qemu(b.machine, &elf)?;
            if a != again {
                failures.push(format!(
                    "{label} on {}: two runs differ: {a:?} vs {again:?}",
                    b.name
                ));
            }
            // The same scalar's round must give the same bits on every target: the FPU's f32
            // and soft-float f32 are both IEEE, fixed point is integer arithmetic.
            if let Some((name, f)) = &first
                && f.fnv != a.fnv
            {
                failures.push(format!(
                    "{label}: the update differs between {name} and {}: {f:?} vs {a:?}",
                    b.name
                ));
            }
            // One target's code is the same in every layout: so must be its count.
            if let Some((_, t)) = per_target.iter().find(|(t, _)| *t == b.target)
                && t.instructions() != a.instructions()
            {
                failures.push(format!(
                    "{label} for {}: layouts differ: {t:?} vs {a:?}",
                    b.target
                ));
            }
            if a.update_rows == 0 || a.update_rows > FOOT_R {
                failures.push(format!(
                    "{label} on {}: the update has {} rows, not 1..={FOOT_R}",
                    b.name, a.update_rows
                ));
            }
            let insn = a.instructions();
            let ram_total = s.static_ram + a.stack_peak;
            println!(
                "| {label} | {} ({} on {}) | {} B ({} B) | {} B | {} B | {} | {} (±{}) | {} ({} rows) |",
                b.name,
                b.target,
                b.machine.name(),
                s.flash,
                s.text_rodata,
                s.static_ram,
                a.stack_peak,
                kib(ram_total),
                insn,
                a.insn_per_tick,
                a.fnv,
                a.update_rows
            );
            if s.flash - s.text_rodata > MAX_NON_CODE_FLASH {
                failures.push(format!(
                    "{label} on {}: {} B of flash outside .text + .rodata (limit {} B): a large \
                     static is no longer zero-initialised (.bss) and costs flash for its initialiser",
                    b.name,
                    s.flash - s.text_rodata,
                    MAX_NON_CODE_FLASH
                ));
            }
            if ram_total > b.ram || s.flash > b.flash {
                failures.push(format!(
                    "{label} does not fit {}: RAM {} of {}, flash {} of {}",
                    b.name,
                    kib(ram_total),
                    kib(b.ram),
                    kib(s.flash),
                    kib(b.flash)
                ));
            }
            if b.name == "nrf52840" {
                goals.push(format!(
                    "{label}: instructions {insn} < 2,000,000: {}; RAM {} < {}: {}; flash {} < 64 KiB: {}; \
                     fits nRF52840 (256 KiB RAM, 1 MiB flash; linked with its memory.x): {} ({} RAM free)",
                    mark(insn < INSN_GOAL),
                    kib(ram_total),
                    kib(ram_goal),
                    mark(ram_total < ram_goal),
                    kib(s.flash),
                    mark(s.flash < FLASH_GOAL),
                    mark(ram_total <= b.ram && s.flash <= b.flash),
                    kib(b.ram.saturating_sub(ram_total)),
                ));
            }
            if !per_target.iter().any(|(t, _)| *t == b.target) {
                per_target.push((b.target, again));
            }
            first.get_or_insert((b.name, a));
        }
    }
    println!();
    println!("Goals:");
    for g in goals {
        println!("- {g}");
    }
    println!(
        "Instructions are QEMU -icount shift=0 counts (Cortex-M: SysTick ticks x 40; RISC-V: \
         mcycle, 1 per instruction), identical run to run; not cycles of any core. thumbv7em \
         has the FPU (hardware f32); thumbv7m, thumbv6m and riscv32imc compute f32 in software. \
         Flash includes the vector table / start-up code and semihosting printing."
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
