//! SIGINT and SIGTERM during a run (installed by the command line's `train` and resume): the
//! round in progress finishes, a checkpoint is written, and the command exits with 128 + the
//! signal (130, 143) after saying how to resume.
//!
//! The handlers only set a flag ([`signal_hook::flag`]); the round loop polls it between
//! rounds. A second signal while the first is being handled ends the process at once, with
//! the same exit code (its directory still holds the previous checkpoint).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signals a run stops cleanly on.
const SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// Which signal arrived (0 = none); installed by [`Interrupts::install`].
#[derive(Clone, Debug, Default)]
pub struct Interrupts {
    signal: Arc<AtomicUsize>,
}

/// The error a run returns when it was interrupted (after checkpointing).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {name}")]
pub struct Interrupted {
    /// The signal number.
    pub signal: i32,
    /// Its name.
    pub name: &'static str,
}

impl Interrupted {
    /// The shell's exit status for a process ended by this signal.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal) as u8
    }
}

impl Interrupts {
    /// Installs the handlers for this process (a train or resume command).
    pub fn install() -> std::io::Result<Interrupts> {
        let me = Interrupts::default();
        let seen = Arc::new(AtomicBool::new(false));
        for sig in SIGNALS {
            // Order matters: the shutdown check runs before the flag is set, so only a second
            // signal finds it set and exits.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&seen))?;
            signal_hook::flag::register(sig, Arc::clone(&seen))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&me.signal), sig as usize)?;
        }
        Ok(me)
    }

    /// The signal received so far, if any.
    pub fn pending(&self) -> Option<Interrupted> {
        let signal = self.signal.load(Ordering::SeqCst) as i32;
        (signal != 0).then_some(Interrupted {
            signal,
            name: if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            },
        })
    }
}
