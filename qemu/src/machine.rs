//! The emulated boards fedrecon runs its images on, and which Rust target each one runs.

use std::fmt;

/// An emulated board: the QEMU program, machine and core an image boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Machine {
    /// `qemu-system-arm -machine mps2-an386`: Cortex-M4 with FPU, 4 MB flash at 0, 4 MB RAM at
    /// 0x2000_0000, CMSDK UARTs. Runs `thumbv7em-none-eabihf`.
    Mps2An386,
    /// `qemu-system-arm -machine mps2-an385`: Cortex-M3, no FPU, the same memory map and UARTs
    /// as the an386. Runs `thumbv7m-none-eabi` and, as ARMv6-M is a subset of ARMv7-M,
    /// `thumbv6m-none-eabi` (the RP2040's Cortex-M0+ instruction set).
    Mps2An385,
    /// `qemu-system-riscv32 -machine virt -bios none`: RV32 (the image uses only `imc`, the
    /// ESP32-C3's set), 128 MB RAM at 0x8000_0000 where `-kernel` loads the ELF, no firmware in
    /// M-mode before it. Runs `riscv32imc-unknown-none-elf`.
    Riscv32Virt,
}

impl Machine {
    /// Every machine, in the order CI runs them.
    pub const ALL: [Machine; 3] = [Machine::Mps2An386, Machine::Mps2An385, Machine::Riscv32Virt];

    /// The machine that runs images built for the Rust target `triple`.
    pub fn for_target(triple: &str) -> Option<Machine> {
        match triple {
            "thumbv7em-none-eabihf" => Some(Machine::Mps2An386),
            "thumbv7m-none-eabi" | "thumbv6m-none-eabi" => Some(Machine::Mps2An385),
            "riscv32imc-unknown-none-elf" => Some(Machine::Riscv32Virt),
            _ => None,
        }
    }

    /// The Rust targets whose images run on this machine.
    pub fn targets(self) -> &'static [&'static str] {
        match self {
            Machine::Mps2An386 => &["thumbv7em-none-eabihf"],
            Machine::Mps2An385 => &["thumbv7m-none-eabi", "thumbv6m-none-eabi"],
            Machine::Riscv32Virt => &["riscv32imc-unknown-none-elf"],
        }
    }

    /// The QEMU executable (Debian: `qemu-system-arm`, or `qemu-system-misc` for RISC-V).
    pub fn program(self) -> &'static str {
        match self {
            Machine::Mps2An386 | Machine::Mps2An385 => "qemu-system-arm",
            Machine::Riscv32Virt => "qemu-system-riscv32",
        }
    }

    /// QEMU's `-machine` name.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Mps2An386 => "mps2-an386",
            Machine::Mps2An385 => "mps2-an385",
            Machine::Riscv32Virt => "virt",
        }
    }

    /// The arguments that select the board and core.
    pub(crate) fn args(self) -> &'static [&'static str] {
        match self {
            Machine::Mps2An386 => &["-machine", "mps2-an386", "-cpu", "cortex-m4"],
            Machine::Mps2An385 => &["-machine", "mps2-an385", "-cpu", "cortex-m3"],
            // `-bios none`: no OpenSBI; the ELF starts in M-mode at its entry point.
            Machine::Riscv32Virt => &["-machine", "virt", "-bios", "none"],
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_runs_the_targets_it_lists() {
        for m in Machine::ALL {
            assert!(!m.targets().is_empty());
            for t in m.targets() {
                assert_eq!(Machine::for_target(t), Some(m), "{t}");
            }
        }
        assert_eq!(Machine::for_target("x86_64-unknown-linux-gnu"), None);
        assert_eq!(Machine::for_target("thumbv8m.main-none-eabi"), None);
    }
}
