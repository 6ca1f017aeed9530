//! The cases in `core/tests/cases/` as embedded-test tests for QEMU: mps2-an386 (Cortex-M4F,
//! `thumbv7em-none-eabihf`), mps2-an385 (Cortex-M3, `thumbv7m-none-eabi` and
//! `thumbv6m-none-eabi`) and riscv32 virt (`riscv32imc-unknown-none-elf`).
//!
//! Nothing here is written per case: `for_each_case!` (in `core/tests/cases/mod.rs`) expands
//! `target_tests!`, which puts each listed case into an `#[embedded_test::tests]` module.
//! `cargo test-target` (from the repository root) builds this and runs every case in its own
//! QEMU boot through `runner/`.
#![no_std]
#![cfg_attr(test, no_main)]

// Formatted (and owned) by core: `cargo fmt` here must not rewrite core's files.
#[cfg(test)]
#[rustfmt::skip]
#[path = "../../core/tests/cases/mod.rs"]
mod cases;

#[cfg(all(test, target_arch = "arm"))]
use cortex_m as _; // critical-section implementation
#[cfg(all(test, target_arch = "arm"))]
use cortex_m_rt as _; // reset handler, vector table, FPU enable (eabihf)
#[cfg(all(test, target_arch = "riscv32"))]
use riscv as _; // critical-section implementation
#[cfg(all(test, target_arch = "riscv32"))]
use riscv_rt as _; // start-up code and trap entry

/// Wraps every listed case in an embedded-test `#[test]`, named `module::case`. The attribute
/// sees the expanded functions because this macro generates the whole attributed module.
#[cfg(test)]
macro_rules! target_tests {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        $(
            #[embedded_test::tests]
            mod $module {
                $(
                    #[test]
                    fn $case() {
                        crate::cases::$module::$case();
                    }
                )*
            }
        )*
    };
}

#[cfg(test)]
cases::for_each_case!(target_tests);

/// A fault (e.g. an invalid memory access) fails the test at once instead of spinning until
/// the runner's timeout.
#[cfg(all(test, target_arch = "arm"))]
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    semihosting::eprintln!("HardFault: {frame:?}");
    semihosting::process::exit(102)
}

/// The RISC-V counterpart of `HardFault` (riscv-rt's default handler spins): prints the trap
/// cause and address, then exits QEMU with 102.
#[cfg(all(test, target_arch = "riscv32"))]
#[unsafe(export_name = "ExceptionHandler")]
fn exception_handler(frame: &riscv_rt::TrapFrame) -> ! {
    let cause = riscv::register::mcause::read().bits();
    let pc = riscv::register::mepc::read();
    semihosting::eprintln!(
        "exception: mcause={cause:#x} mepc={pc:#x} ra={:#x}",
        frame.ra
    );
    semihosting::process::exit(102)
}

/// Prints the panic (message and location) on the host's stderr, then exits QEMU with 101.
#[cfg(test)]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    semihosting::eprintln!("{info}");
    semihosting::process::exit(101)
}
