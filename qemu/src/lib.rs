//! # fedrecon-qemu
//!
//! The one place fedrecon writes a QEMU command line. The target-tests runner, the firmware
//! xtask (footprint, smoke, parity) and the simulator's QEMU boards all boot an image the same
//! way: a [`Machine`] (which emulator, board and core), the kernel ELF, semihosting (always on:
//! it carries exit codes, prints and the test runner's arguments), optionally `-icount` for
//! deterministic instruction counts, and optionally UART0 on a TCP socket the host connects to.
//!
//! ```no_run
//! use fedrecon_qemu::{Machine, Qemu};
//! use std::process::Stdio;
//! use std::time::Duration;
//!
//! // A run to completion (footprint, a test case): exit code and output captured.
//! let done = Qemu::new(Machine::Mps2An385, "image.elf").icount(0).run(Duration::from_secs(60))?;
//! assert_eq!(done.code, Some(0));
//!
//! // A board on a socket (the simulator's `--qemu-devices`): QEMU waits for the host.
//! let port = Qemu::free_port()?;
//! let mut board = Qemu::new(Machine::Mps2An386, "qemu.elf")
//!     .icount(0)
//!     .serial_socket(port)
//!     .spawn(Stdio::null(), Stdio::piped())?;
//! let link = board.connect_serial(Duration::from_secs(20))?;
//! # let _ = link;
//! # Ok::<(), fedrecon_qemu::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod machine;
mod run;

pub use machine::Machine;
pub use run::{Error, Finished, Qemu, Running, Serial};
