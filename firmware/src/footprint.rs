//! The measured round behind `cargo footprint`: one client with 300 ratings at K = 50, its
//! rated rows cached, one training round between two SysTick reads. The device budgets
//! `R = 160` trained rows (a board's realistic budget: the round splits its ratings in halves,
//! so it trains the rows of at most 150 distinct items).
//!
//! Instruction counting: [`crate::counter`] (SysTick on Cortex-M, `mcycle` on RISC-V, both
//! counting instructions under QEMU `-icount shift=0`). Only the round is inside the two
//! reads; filling the data and printing are not. The same source runs on every target: the
//! Cortex-M4F (hardware f32), the FPU-less Cortex-M3 / M0+ and RV32IMC (soft-float f32).

use crate::counter::{Counter, INSN_PER_TICK};
use crate::rows::CachedRows;
use crate::stack::{self, Painted};
use fedrecon_core::rng::DeviceRng;
use fedrecon_core::{Device, Reconstruction, RoundConfig, Scalar, SplitConfig};

/// Embedding width of the report.
pub const K: usize = 50;
/// Ratings of the client (the tutorial's per-user cap).
pub const N: usize = 300;
/// Trained rows per round the device holds: `split_dataset` halves the 300 ratings, so the
/// round trains at most 150 distinct rows (a round needing more would be `CapacityExceeded`).
pub const R: usize = 160;
/// Items in ML-1M.
pub const NUM_ITEMS: u32 = 3706;
/// The round's seed.
pub const SEED: u64 = 2024;

/// The device workspace of the report: `N` ratings, `R` trained rows.
pub type FootDevice<S> = Device<S, N, K, R>;
/// The row cache of the report (all `N` rated rows, stored as `S`: Q3.12 halves it; the
/// tutorial's model has no item biases).
pub type FootRows<S> = CachedRows<S, N, K>;

/// The round configuration: the tutorial's client (batch 5, split halves, lr 0.1 / 0.5), the
/// first 300 ratings shuffled with seed 42.
pub fn config() -> RoundConfig {
    RoundConfig {
        split: SplitConfig {
            max_examples: Some(N as u16),
            shuffle_seed: Some(42),
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    }
}

/// [`config`] with exact reconstruction (the ridge solve of the user embedding, regulariser
/// 0.1) instead of reconstruction SGD: the `footprint-exact*` images.
pub fn exact_config() -> RoundConfig {
    RoundConfig {
        user_l2: 0.1,
        reconstruction: Reconstruction::Exact,
        ..config()
    }
}

/// Fills `device` with 300 synthetic ratings on distinct items and `rows` with their rows.
/// Items are generated in ascending order so the cache needs no sort.
fn fill<S: Scalar>(device: &mut FootDevice<S>, rows: &mut FootRows<S>) -> Result<(), &'static str> {
    let data = device.data_mut();
    data.clear();
    rows.reset(NUM_ITEMS);
    let mut rng = DeviceRng::new(7);
    for i in 0..N as u32 {
        // 12 * 299 + 6 < 3706: distinct, ascending, spread over the catalogue.
        let item = 12 * i + i % 7;
        let rating = (1 + (7 * i + 3) % 5) as f32;
        data.push(item, S::from_f32(rating), NUM_ITEMS)
            .map_err(|_| "rating refused")?;
        let mut row = [S::ZERO; K];
        for v in row.iter_mut() {
            *v = S::from_f32(0.5 * (rng.unit_f32() - 0.5));
        }
        rows.push(item, &row, None).map_err(|_| "row refused")?;
    }
    Ok(())
}

/// Runs the report for scalar `S` and exits QEMU through semihosting: 0 after printing one
/// `footprint ...` line, 1 if the round failed. `painted` comes from [`stack::paint`], called
/// first thing in `main`; `cfg` is [`config`] or [`exact_config`].
pub fn run<S: Scalar>(
    label: &str,
    cfg: &RoundConfig,
    painted: Painted,
    device: &mut FootDevice<S>,
    rows: &mut FootRows<S>,
) -> ! {
    #[cfg(target_arch = "arm")]
    let Some(mut p) = cortex_m::Peripherals::take() else {
        fail("peripherals already taken")
    };
    if let Err(e) = fill(device, rows) {
        fail(e)
    }
    #[cfg(target_arch = "arm")]
    let counter = Counter::start(&mut p.SYST);
    #[cfg(target_arch = "riscv32")]
    let counter = Counter::start();
    let result = device.train(rows, cfg, SEED);
    let ticks = counter.ticks();
    let update = match result {
        Ok(u) => u,
        Err(fedrecon_core::Error::CapacityExceeded { .. }) => {
            fail("train failed: more trained rows than R")
        }
        Err(_) => fail("train failed"),
    };
    if update.items.is_empty() || update.items.len() > R {
        fail("the update is empty or has more rows than R")
    }
    // A fingerprint of the update (FNV-1a over the deltas' f32 bits) so runs and builds can
    // be compared for determinism without printing floats (which would add code to the image).
    let mut h: u32 = 0x811C_9DC5;
    for row in update.deltas {
        for x in row {
            for b in x.to_f32().to_bits().to_le_bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        }
    }
    let peak = painted.peak();
    semihosting::println!(
        "footprint scalar={} k={} ratings={} r={} ticks={} insn_per_tick={} update_rows={} \
         weight={} loss_micro={} update_fnv={:08x} stack_peak={} stack_available={}",
        label,
        K,
        N,
        R,
        ticks,
        INSN_PER_TICK,
        update.items.len(),
        update.weight,
        (update.metrics.loss_sum * 1e6 / update.metrics.count.max(1) as f32) as u32,
        h,
        peak,
        painted.available(),
    );
    semihosting::process::exit(0)
}

fn fail(what: &str) -> ! {
    semihosting::eprintln!("footprint error: {}", what);
    semihosting::process::exit(1)
}

/// Paints the stack; re-exported so the binaries call it before anything else.
pub use stack::paint;

/// Defines a footprint image for scalar `$s`: its device and rows in `.bss`, the entry point
/// running one measured round named `$name` with `$config()`, and the panic handler. Every
/// `bin/footprint*.rs` is one call, so the images differ only in what they measure.
#[macro_export]
macro_rules! footprint_image {
    ($s:ty, $name:literal, $config:path) => {
        // Zero-initialised and const-constructed: both land in .bss, never on the stack.
        static DEVICE: static_cell::ConstStaticCell<$crate::footprint::FootDevice<$s>> =
            static_cell::ConstStaticCell::new($crate::footprint::FootDevice::new());
        static ROWS: static_cell::ConstStaticCell<$crate::footprint::FootRows<$s>> =
            static_cell::ConstStaticCell::new($crate::footprint::FootRows::new());

        #[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
        #[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
        fn main() -> ! {
            let painted = $crate::footprint::paint();
            $crate::footprint::run($name, &$config(), painted, DEVICE.take(), ROWS.take())
        }

        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
            $crate::qemu_panic(info)
        }
    };
}
