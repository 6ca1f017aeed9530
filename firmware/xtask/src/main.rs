//! Host side of the firmware: builds the images and measures them.
//!
//! `fedrecon-firmware-xtask build`
//!     Builds every firmware image in release mode twice: linked for QEMU mps2-an386 (4 MB
//!     flash, 4 MB RAM) and for the nRF52840 (1 MB flash, 256 KB RAM, feature
//!     `board-nrf52840`), so the linker proves the board's budget. Images are copied to
//!     `firmware/target/images/<layout>/`. The root alias `cargo build-fw` runs this.
//!
//! `fedrecon-firmware-xtask footprint`
//!     `build`, then for the three footprint images (f32, Q16.16, Q3.12) and both layouts: section sizes
//!     from the ELF, and one QEMU run each (`-icount shift=0`, twice, to check the figures are
//!     deterministic) for the peak stack and the instructions of one training round. Prints one
//!     table. Fails if an image does not run, is not deterministic, or does not fit the
//!     nRF52840 (statics + peak stack over 256 KB, or flash over 1 MB). The root alias
//!     `cargo footprint` runs this.
//!
//! `fedrecon-firmware-xtask qemu-smoke`
//!     `build`, then boots the `qemu` image with UART0 on a TCP socket (the recipe of
//!     firmware/README.md), plays one training round through it and checks that the update's
//!     bytes equal what fedrecon-core encodes for the same round on the host.
//!
//! `fedrecon-firmware-xtask parity`
//!     `build`, then hundreds of random rounds (random clients and configurations, f32 and
//!     Q16.16) through the `parity` images in one QEMU boot each; every answer must equal
//!     fedrecon-core's bytes on the host (`parity.rs`). The root alias `cargo fw-parity`.

mod parity;
mod smoke;

use object::{Object, ObjectSection, SectionKind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

const TARGET: &str = "thumbv7em-none-eabihf";
/// Instructions per SysTick tick under `-icount shift=0` (1 ns per instruction) with SysTick on
/// mps2-an386's 25 MHz processor clock; see EMBEDDED-NOTES.md.
const INSN_PER_TICK: u64 = 40;
const KIB: u64 = 1024;
const RAM_BASE: u64 = 0x2000_0000;

/// A memory layout the images are linked for.
struct Layout {
    name: &'static str,
    features: &'static [&'static str],
    flash: u64,
    ram: u64,
}

const LAYOUTS: [Layout; 2] = [
    Layout {
        name: "mps2-an386",
        features: &[],
        flash: 4096 * KIB,
        ram: 4096 * KIB,
    },
    Layout {
        name: "nrf52840",
        features: &["board-nrf52840"],
        flash: 1024 * KIB,
        ram: 256 * KIB,
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
        Some("build") => build().map(|_| ()),
        Some("footprint") => footprint(),
        Some("qemu-smoke") => build().and_then(|dirs| smoke::run(&dirs[0].join("qemu"))),
        Some("parity") => build()
            .and_then(|dirs| parity::main(&dirs[0], &firmware_dir().join("target").join("parity"))),
        _ => Err(
            "usage: fedrecon-firmware-xtask (build | footprint | qemu-smoke | parity)".to_string(),
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

/// Builds all binaries for each layout; returns `images/<layout>` directories.
fn build() -> Result<Vec<PathBuf>, String> {
    let fw = firmware_dir();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut dirs = Vec::new();
    for layout in &LAYOUTS {
        eprintln!("building firmware images for {}", layout.name);
        let mut cmd = Command::new(&cargo);
        // Run in firmware/ so its .cargo/config.toml (the thumbv7em target) applies.
        cmd.current_dir(&fw)
            .args(["build", "--release", "--locked", "--bins"]);
        if !layout.features.is_empty() {
            cmd.args(["--features", &layout.features.join(",")]);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("firmware build for {} failed", layout.name));
        }
        // Both layouts share one target directory, where the last build's binaries are the
        // ones at the top of release/; keep each layout's copy apart.
        let release = fw.join("target").join(TARGET).join("release");
        let out = fw.join("target").join("images").join(layout.name);
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        for entry in fs::read_dir(&release).map_err(|e| format!("{}: {e}", release.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() && !name.contains('.') && !name.starts_with("lib") {
                fs::copy(&path, out.join(name)).map_err(|e| format!("copy {name}: {e}"))?;
            }
        }
        dirs.push(out);
    }
    // The nRF52840-DK image: its board support (HAL, defmt) is behind its own feature, so it
    // is one more build of that binary alone.
    eprintln!("building the nRF52840-DK image");
    let status = Command::new(&cargo)
        .current_dir(&fw)
        .args([
            "build",
            "--release",
            "--locked",
            "--features",
            "nrf52840-dk",
        ])
        .args(["--bin", DK_IMAGE])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("the nRF52840-DK image did not build".into());
    }
    let release = fw.join("target").join(TARGET).join("release");
    let out = fw.join("target").join("images").join("nrf52840-dk");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    fs::copy(release.join(DK_IMAGE), out.join(DK_IMAGE))
        .map_err(|e| format!("copy {DK_IMAGE}: {e}"))?;
    Ok(dirs)
}

/// The nRF52840-DK image (`src/bin/nrf52840.rs`), in `images/nrf52840-dk/`.
const DK_IMAGE: &str = "nrf52840";

/// Flash and RAM of the protocol images: the QEMU board and the nRF52840-DK board.
fn protocol_images(dirs: &[PathBuf]) -> Result<(), String> {
    let fw = firmware_dir();
    let images = [
        ("qemu (mps2-an386, UART0)", dirs[0].join("qemu")),
        (
            "nrf52840 (nRF52840-DK, UARTE0, defmt)",
            fw.join("target/images/nrf52840-dk").join(DK_IMAGE),
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
    /// `.vector_table + .text + .rodata` plus the `.data` initialisers (stored in flash).
    flash: u64,
    /// `.text + .rodata` alone.
    text_rodata: u64,
    /// `.data + .bss + .uninit`.
    static_ram: u64,
}

fn sizes(elf: &Path) -> Result<Sizes, String> {
    let bytes = fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    let (mut flash, mut text_rodata, mut static_ram) = (0, 0, 0);
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        let size = s.size();
        // Debug info and other non-allocated sections have address 0 and kind Debug/Other.
        let alloc = matches!(
            s.kind(),
            SectionKind::Text
                | SectionKind::Data
                | SectionKind::ReadOnlyData
                | SectionKind::ReadOnlyString
                | SectionKind::UninitializedData
                | SectionKind::ReadOnlyDataWithRel
        );
        if !alloc || size == 0 {
            continue;
        }
        if s.address() >= RAM_BASE {
            static_ram += size;
            // Initialised RAM is copied from flash at reset.
            if s.kind() == SectionKind::Data {
                flash += size;
            }
        } else {
            flash += size;
            if name == ".text" || name == ".rodata" {
                text_rodata += size;
            }
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
    stack_peak: u64,
    update_rows: u64,
    fnv: String,
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

/// Boots `elf` on QEMU mps2-an386 with deterministic instruction counting.
fn run_qemu(elf: &Path) -> Result<Run, String> {
    let mut child = Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-cpu", "cortex-m4"])
        .args(["-display", "none", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run qemu-system-arm (scripts/install-target-tools.sh): {e}")
        })?;
    let start = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{}: QEMU timed out", elf.display()));
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {stdout}{stderr}",
            elf.display(),
            out.status
        ));
    }
    let line = stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.starts_with("footprint "))
        .ok_or_else(|| format!("{}: no footprint line in: {stdout}{stderr}", elf.display()))?;
    Ok(Run {
        ticks: num(line, "ticks")?,
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
    let mut failures = Vec::new();
    println!();
    println!(
        "Footprint of one training round: K = 50, 300 ratings, 300 cached rows, R = {FOOT_R} trained \
         rows (firmware/src/footprint.rs)"
    );
    println!(
        "| scalar | layout | flash (text+rodata) | static RAM (data+bss) | peak stack | RAM total | instructions / round | update fnv |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for (bin, label, ram_goal) in FOOTPRINTS {
        let mut first: Option<Run> = None;
        for (layout, dir) in LAYOUTS.iter().zip(&dirs) {
            let elf = dir.join(bin);
            let s = sizes(&elf)?;
            let a = run_qemu(&elf)?;
            let b = run_qemu(&elf)?;
            if a != b {
                failures.push(format!(
                    "{label} on {}: two runs differ: {a:?} vs {b:?}",
                    layout.name
                ));
            }
            // The round's code and data are the same in both layouts: so must be its count.
            if let Some(f) = &first
                && (f.ticks != a.ticks || f.fnv != a.fnv)
            {
                failures.push(format!("{label}: layouts differ: {f:?} vs {a:?}"));
            }
            if a.update_rows == 0 || a.update_rows > FOOT_R {
                failures.push(format!(
                    "{label} on {}: the update has {} rows, not 1..={FOOT_R}",
                    layout.name, a.update_rows
                ));
            }
            let insn = a.ticks * INSN_PER_TICK;
            let ram_total = s.static_ram + a.stack_peak;
            println!(
                "| {label} | {} | {} B ({} B) | {} B | {} B | {} | {} (±{INSN_PER_TICK}) | {} ({} rows) |",
                layout.name,
                s.flash,
                s.text_rodata,
                s.static_ram,
                a.stack_peak,
                kib(ram_total),
                insn,
                a.fnv,
                a.update_rows
            );
            if s.flash - s.text_rodata > MAX_NON_CODE_FLASH {
                failures.push(format!(
                    "{label} on {}: {} B of flash outside .text + .rodata (limit {} B): a large \
                     static is no longer zero-initialised (.bss) and costs flash for its initialiser",
                    layout.name,
                    s.flash - s.text_rodata,
                    MAX_NON_CODE_FLASH
                ));
            }
            if ram_total > layout.ram || s.flash > layout.flash {
                failures.push(format!(
                    "{label} does not fit {}: RAM {} of {}, flash {} of {}",
                    layout.name,
                    kib(ram_total),
                    kib(layout.ram),
                    kib(s.flash),
                    kib(layout.flash)
                ));
            }
            if layout.name == "nrf52840" {
                goals.push(format!(
                    "{label}: instructions {insn} < 2,000,000: {}; RAM {} < {}: {}; flash {} < 64 KiB: {}; \
                     fits nRF52840 (256 KiB RAM, 1 MiB flash; linked with its memory.x): {} ({} RAM free)",
                    mark(insn < INSN_GOAL),
                    kib(ram_total),
                    kib(ram_goal),
                    mark(ram_total < ram_goal),
                    kib(s.flash),
                    mark(s.flash < FLASH_GOAL),
                    mark(ram_total <= layout.ram && s.flash <= layout.flash),
                    kib(layout.ram.saturating_sub(ram_total)),
                ));
            }
            first.get_or_insert(a);
        }
    }
    println!();
    println!("Goals:");
    for g in goals {
        println!("- {g}");
    }
    println!(
        "Instructions are QEMU -icount shift=0 counts (SysTick ticks x {INSN_PER_TICK}), identical run to run; \
         not Cortex-M4 cycles. Flash includes the vector table and semihosting printing."
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
