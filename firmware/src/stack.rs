//! Peak stack by painting: fill the free RAM between the end of the statics and the stack
//! pointer with a pattern, run the workload, then find the lowest word that changed.
//!
//! Why painting: on QEMU mps2 a stack overflow does not fault (see EMBEDDED-NOTES.md), and
//! QEMU has no watchpoint-style high-water counter, so the pattern is the measurement.

use core::ptr::{addr_of, read_volatile, write_volatile};

/// The paint; a stack word that happens to hold it would be under-counted by one word.
const PAINT: u32 = 0x5AC3_A55C;

/// Bytes left unpainted below the stack pointer read in [`paint`]: the compiler may read the
/// stack pointer before pushing this function's own frame (shrink-wrapping), so the words
/// just below it are about to be used. Any workload worth measuring goes deeper than this.
const MARGIN: usize = 256;

unsafe extern "C" {
    /// End of `.bss`/`.uninit` (start of the unused RAM), from cortex-m-rt's or riscv-rt's
    /// `link.x` (both name it so; riscv-rt's heap is empty, so it is where the stack may end).
    static __sheap: u32;
    /// Initial stack pointer (top of RAM), from the same `link.x`.
    static _stack_start: u32;
}

#[cfg(target_arch = "arm")]
fn stack_pointer() -> usize {
    cortex_m::register::msp::read() as usize
}

#[cfg(target_arch = "riscv32")]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register; no memory access.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// The painted region of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Painted {
    low: usize,
    top: usize,
}

/// Paints from the end of the statics up to the current stack pointer. Call it early in
/// `main`, before the workload; everything above the stack pointer is already in use.
#[inline(never)]
pub fn paint() -> Painted {
    // Only addresses are taken; the linker symbols are never read as values.
    let low = addr_of!(__sheap) as usize;
    let top = addr_of!(_stack_start) as usize;
    // The words more than MARGIN below the current stack pointer belong to no live frame
    // (neither Arm nor RISC-V has a red zone), so overwriting them cannot change program state.
    let sp = stack_pointer();
    let end = sp.saturating_sub(MARGIN);
    let mut p = low;
    while p + 4 <= end {
        // SAFETY: `p` is word-aligned (`__sheap` is 4-aligned), inside RAM, above every
        // static and MARGIN below the stack pointer: memory no Rust object owns at this point.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    Painted { low, top }
}

impl Painted {
    /// Bytes of stack used at the deepest point since [`paint`]: from the top of RAM down to
    /// the lowest word that no longer holds the paint.
    pub fn peak(&self) -> usize {
        let mut p = self.low;
        // SAFETY: the same words `paint` wrote; reading them aliases nothing live below the
        // stack pointer, and above it only plain words are read.
        while p < self.top && unsafe { read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        self.top - p
    }

    /// Bytes between the end of the statics and the top of RAM (statics' end to stack top).
    pub fn available(&self) -> usize {
        self.top - self.low
    }
}
