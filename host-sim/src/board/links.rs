//! Opening and reopening the byte link to a real board (`--device`): a TCP socket or a serial
//! port, with the timeouts of `[reliability]` (`board_timeout_secs`, `board_connect_secs`).
//! A board whose link dies is reopened and resynchronised, as a QEMU board is restarted, so a
//! replugged USB serial port or a restarted TCP bridge rejoins the rounds.

use std::time::Duration;

use anyhow::{Context, Result};

use super::Link;
use super::link_faults::Reconnect;

/// How long a board may stay silent, and how long to wait for its link to open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkTimeouts {
    /// Read timeout: an exchange with no byte for this long fails (and is retried).
    pub read: Duration,
    /// Patience for a TCP board to accept, a QEMU board to listen, or a port to reappear.
    pub connect: Duration,
}

impl Default for LinkTimeouts {
    fn default() -> Self {
        Self {
            read: Duration::from_secs(300),
            connect: Duration::from_secs(20),
        }
    }
}

/// Opens `spec`: `tcp:HOST:PORT` or a serial port path (115200 baud).
pub fn open_device(spec: &str, t: LinkTimeouts) -> Result<Box<dyn Link>> {
    if let Some(addr) = spec.strip_prefix("tcp:") {
        let s = super::connect_retry(addr, t.connect).with_context(|| format!("board {spec}"))?;
        s.set_read_timeout(Some(t.read))?;
        s.set_nodelay(true)?;
        return Ok(Box::new(s));
    }
    let t0 = std::time::Instant::now();
    loop {
        match serialport::new(spec, 115_200).timeout(t.read).open() {
            Ok(port) => return Ok(Box::new(port)),
            // A replugged USB port takes a moment to reappear.
            Err(_) if t0.elapsed() < t.connect => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("board {spec}: cannot open the serial port")));
            }
        }
    }
}

/// Reopens `spec` when its link fails (the board's resynchronisation then greets it).
pub(crate) fn device_reconnect(spec: String, t: LinkTimeouts) -> Reconnect {
    Box::new(move || {
        tracing::info!(board = %spec, "reopening the board's link");
        open_device(&spec, t).map_err(|e| std::io::Error::other(format!("{e:#}")))
    })
}
