//! An instruction counter for the measured round, per architecture.
//!
//! Under QEMU `-icount shift=0` every instruction takes 1 ns of virtual time, so a timer on the
//! processor clock counts instructions, identically run to run (EMBEDDED-NOTES.md):
//! - Cortex-M (mps2-an385 / an386, 25 MHz): SysTick, a 24-bit down-counter; one tick is 40
//!   instructions.
//! - RISC-V (virt): the `mcycle` CSR, which QEMU derives from the instruction count under
//!   `-icount`: one tick is one instruction.
//!
//! On real silicon the same ticks are processor cycles.

/// Instructions per tick under `-icount shift=0` (printed so the host does not guess).
#[cfg(target_arch = "arm")]
pub const INSN_PER_TICK: u32 = 40;
/// Instructions per tick under `-icount shift=0` (printed so the host does not guess).
#[cfg(target_arch = "riscv32")]
pub const INSN_PER_TICK: u32 = 1;

/// A started counter.
pub struct Counter {
    #[cfg(target_arch = "arm")]
    start: u32,
    #[cfg(target_arch = "riscv32")]
    start: u64,
}

#[cfg(target_arch = "arm")]
impl Counter {
    /// Starts SysTick as a free-running 24-bit down-counter on the processor clock.
    pub fn start(syst: &mut cortex_m::peripheral::SYST) -> Counter {
        use cortex_m::peripheral::SYST;
        use cortex_m::peripheral::syst::SystClkSource;
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_counter();
        Counter {
            start: SYST::get_current(),
        }
    }

    /// Ticks since [`start`](Self::start) (wraps after 2^24 ticks, 671 M instructions).
    pub fn ticks(&self) -> u64 {
        let now = cortex_m::peripheral::SYST::get_current();
        u64::from(self.start.wrapping_sub(now) & 0x00FF_FFFF)
    }
}

#[cfg(target_arch = "riscv32")]
impl Counter {
    /// Reads `mcycle` (64 bits: it does not wrap in any measurement).
    pub fn start() -> Counter {
        Counter {
            start: riscv::register::mcycle::read64(),
        }
    }

    /// Ticks since [`start`](Self::start).
    pub fn ticks(&self) -> u64 {
        riscv::register::mcycle::read64().wrapping_sub(self.start)
    }
}
