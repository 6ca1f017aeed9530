//! The emulated boards fedrecon runs its images on, and which Rust target each one runs.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

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

    /// The machine that runs the ELF image `path`, read off its header: a RISC-V image runs on
    /// `virt`; an Arm image built for the hard-float ABI (it uses the FPU) on the an386, a
    /// soft-float one (Cortex-M3 or M0+ code) on the FPU-less an385. So a board image names its
    /// own machine, whichever directory it was copied to.
    pub fn for_elf(path: &Path) -> io::Result<Machine> {
        let mut header = [0u8; 40];
        File::open(path)?.read_exact(&mut header)?;
        Self::for_elf_header(&header).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a 32-bit little-endian Arm or RISC-V ELF image",
                    path.display()
                ),
            )
        })
    }

    /// [`Machine::for_elf`] on the first 40 bytes of an ELF file.
    fn for_elf_header(h: &[u8; 40]) -> Option<Machine> {
        const EM_ARM: u16 = 40;
        const EM_RISCV: u16 = 243;
        const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
        // "\x7fELF", 32-bit class, little-endian.
        if h[..4] != *b"\x7fELF" || h[4] != 1 || h[5] != 1 {
            return None;
        }
        let machine = u16::from_le_bytes([h[18], h[19]]);
        let flags = u32::from_le_bytes([h[36], h[37], h[38], h[39]]);
        match machine {
            EM_ARM if flags & EF_ARM_ABI_FLOAT_HARD != 0 => Some(Machine::Mps2An386),
            EM_ARM => Some(Machine::Mps2An385),
            EM_RISCV => Some(Machine::Riscv32Virt),
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

#[cfg(test)]
mod elf_tests {
    use super::Machine;

    fn header(machine: u16, flags: u32) -> [u8; 40] {
        let mut h = [0u8; 40];
        h[..6].copy_from_slice(b"\x7fELF\x01\x01");
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[36..40].copy_from_slice(&flags.to_le_bytes());
        h
    }

    #[test]
    fn an_image_names_its_machine() {
        // The flags rustc's images carry (readelf -h): EABI 5 hard-float, soft-float; RVC.
        assert_eq!(
            Machine::for_elf_header(&header(40, 0x0500_0400)),
            Some(Machine::Mps2An386)
        );
        assert_eq!(
            Machine::for_elf_header(&header(40, 0x0500_0200)),
            Some(Machine::Mps2An385)
        );
        assert_eq!(
            Machine::for_elf_header(&header(243, 0x1)),
            Some(Machine::Riscv32Virt)
        );
        assert_eq!(
            Machine::for_elf_header(&header(62, 0)),
            None,
            "x86-64 is no board"
        );
        let mut big = header(40, 0x400);
        big[5] = 2;
        assert_eq!(Machine::for_elf_header(&big), None, "big-endian");
        let mut not_elf = header(40, 0x400);
        not_elf[0] = b'M';
        assert_eq!(Machine::for_elf_header(&not_elf), None);
        let missing = std::path::Path::new("/nonexistent/image");
        assert!(Machine::for_elf(missing).is_err());
    }
}
