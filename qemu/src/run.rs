//! Building the command line, running an image to its exit, and keeping a board running.

use crate::Machine;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where the board's UART0 goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    /// Nowhere (`-serial none`): the image talks through semihosting only.
    None,
    /// A TCP server on `127.0.0.1:port` that QEMU opens before the guest starts and that makes
    /// the guest wait until the host connects (`server=on,wait=on`), so no byte is lost (a
    /// `tcp:` serial without `wait` drops what the board sends before the host connects).
    Socket {
        /// The TCP port; [`free_port`](Qemu::free_port) finds one.
        port: u16,
    },
}

/// One QEMU invocation: a machine, a kernel ELF and the options fedrecon uses.
#[derive(Debug, Clone)]
pub struct Qemu {
    machine: Machine,
    kernel: PathBuf,
    semihosting_args: Vec<String>,
    icount: Option<u8>,
    serial: Serial,
    dir: Option<PathBuf>,
}

/// Why QEMU could not be run or reached.
#[derive(Debug)]
pub enum Error {
    /// The QEMU program did not start (usually: not installed).
    Spawn {
        /// The program, e.g. `qemu-system-riscv32`.
        program: &'static str,
        /// What the operating system said.
        source: io::Error,
    },
    /// The board's UART socket did not accept a connection in time.
    Connect {
        /// The port QEMU was told to listen on.
        port: u16,
        /// The last connection error.
        source: io::Error,
    },
    /// Any other I/O failure while running QEMU (waiting, reading its output, a free port).
    Io {
        /// What was being done.
        context: String,
        /// What the operating system said.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn { program, source } => write!(
                f,
                "cannot run {program}: {source} (scripts/install-target-tools.sh installs it)"
            ),
            Error::Connect { port, source } => {
                write!(
                    f,
                    "cannot connect to QEMU's UART socket 127.0.0.1:{port}: {source}"
                )
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. }
            | Error::Connect { source, .. }
            | Error::Io { source, .. } => Some(source),
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

impl Qemu {
    /// Boots `kernel` (an ELF) on `machine` with semihosting on, UART0 unconnected, no
    /// `-icount`, in the current directory.
    pub fn new(machine: Machine, kernel: impl Into<PathBuf>) -> Qemu {
        Qemu {
            machine,
            kernel: kernel.into(),
            semihosting_args: Vec::new(),
            icount: None,
            serial: Serial::None,
            dir: None,
        }
    }

    /// Appends a semihosting command-line argument (what the guest's `SYS_GET_CMDLINE`
    /// returns; embedded-test reads `run_addr <address>` from it).
    pub fn semihosting_arg(mut self, arg: impl Into<String>) -> Qemu {
        self.semihosting_args.push(arg.into());
        self
    }

    /// `-icount shift=N`: every instruction takes 2^N ns of virtual time, so timers count
    /// instructions and runs are identical run to run (`shift=0`: one instruction per ns).
    pub fn icount(mut self, shift: u8) -> Qemu {
        self.icount = Some(shift);
        self
    }

    /// UART0 on a TCP server at `127.0.0.1:port` that QEMU opens and waits on ([`Serial`]).
    pub fn serial_socket(mut self, port: u16) -> Qemu {
        self.serial = Serial::Socket { port };
        self
    }

    /// Runs QEMU in `dir`, where semihosting file names (`parity.in`) are resolved.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Qemu {
        self.dir = Some(dir.into());
        self
    }

    /// The machine this boots.
    pub fn machine(&self) -> Machine {
        self.machine
    }

    /// The kernel ELF this boots.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago, for [`Qemu::serial_socket`].
    pub fn free_port() -> Result<u16, Error> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_error("finding a free TCP port"))?;
        Ok(l.local_addr()
            .map_err(io_error("finding a free TCP port"))?
            .port())
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = self.machine.args().iter().map(OsString::from).collect();
        a.extend(["-display", "none", "-monitor", "none"].map(OsString::from));
        match self.serial {
            Serial::None => a.extend(["-serial", "none"].map(OsString::from)),
            Serial::Socket { port } => {
                a.push("-chardev".into());
                a.push(format!("socket,id=u0,host=127.0.0.1,port={port},server=on,wait=on").into());
                a.extend(["-serial", "chardev:u0"].map(OsString::from));
            }
        }
        let mut semihosting = String::from("enable=on,target=native");
        for arg in &self.semihosting_args {
            // QEMU's option syntax: a literal comma inside a value is written twice.
            semihosting.push_str(",arg=");
            semihosting.push_str(&arg.replace(',', ",,"));
        }
        a.push("-semihosting-config".into());
        a.push(semihosting.into());
        if let Some(shift) = self.icount {
            a.push("-icount".into());
            a.push(format!("shift={shift}").into());
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into_os_string());
        a
    }

    /// The whole command line as one shell-like string, for messages and documentation.
    pub fn command_line(&self) -> String {
        let mut s = self.machine.program().to_string();
        for a in self.args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// A [`Command`] ready to spawn (stdin closed; stdout and stderr as the caller sets them).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.machine.program());
        cmd.args(self.args()).stdin(Stdio::null());
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts QEMU and leaves it running: a board. It is killed when the [`Running`] drops.
    pub fn spawn(&self, stdout: Stdio, stderr: Stdio) -> Result<Running, Error> {
        let child = self
            .command()
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: self.machine.program(),
                source,
            })?;
        Ok(Running {
            child,
            serial: self.serial,
        })
    }

    /// Runs the image to its exit, or kills it after `timeout`, capturing what it printed
    /// (semihosting output goes to QEMU's stdout and stderr).
    pub fn run(&self, timeout: Duration) -> Result<Finished, Error> {
        let mut running = self.spawn(Stdio::piped(), Stdio::piped())?;
        // Drain both pipes on threads so a chatty image cannot block on a full pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(running.child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(running.child.stderr.take().map(|p| Box::new(p) as _));
        let status = running.wait_timeout(timeout)?;
        if status.is_none() {
            running.kill();
        }
        let text = |h: thread::JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Ok(Finished {
            timed_out: status.is_none(),
            code: status.and_then(|s| s.code()),
            stdout: text(out),
            stderr: text(err),
        })
    }
}

/// A QEMU process that is killed (and reaped) when this drops.
#[derive(Debug)]
pub struct Running {
    child: Child,
    serial: Serial,
}

impl Running {
    /// The QEMU process (e.g. to take its stderr pipe).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Connects to the board's UART socket, retrying for up to `patience` while QEMU starts.
    pub fn connect_serial(&mut self, patience: Duration) -> Result<TcpStream, Error> {
        let Serial::Socket { port } = self.serial else {
            return Err(Error::Io {
                context: "connecting to the board's UART".into(),
                source: io::Error::other("QEMU was started without serial_socket"),
            });
        };
        let t0 = Instant::now();
        loop {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                Ok(s) => return Ok(s),
                Err(_) if t0.elapsed() < patience => {
                    // A QEMU that already exited will never listen: say so at once.
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(Error::Connect {
                            port,
                            source: io::Error::other(format!("QEMU exited with {status}")),
                        });
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(Error::Connect { port, source }),
            }
        }
    }

    /// Waits up to `timeout` for QEMU to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_error("waiting for QEMU"))?
            {
                return Ok(Some(status));
            }
            if t0.elapsed() >= timeout {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills QEMU and reaps it (also what dropping does).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a run to completion left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The exit code (semihosting `SYS_EXIT`'s), `None` if killed by a signal or timed out.
    pub code: Option<i32>,
    /// True when the run was killed at its timeout.
    pub timed_out: bool,
    /// QEMU's stdout (the guest's semihosting stdout).
    pub stdout: String,
    /// QEMU's stderr (the guest's semihosting stderr and QEMU's own messages).
    pub stderr: String,
}

impl Finished {
    /// stdout then stderr, for failure messages.
    pub fn output(&self) -> String {
        let mut s = self.stdout.clone();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&self.stderr);
        s
    }

    /// Exited on its own with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(q: &Qemu) -> String {
        q.command_line()
    }

    #[test]
    fn an386_line_is_the_one_the_project_documents() {
        let q = Qemu::new(Machine::Mps2An386, "fw.elf")
            .icount(0)
            .serial_socket(4321);
        assert_eq!(
            line(&q),
            "qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -display none -monitor none \
             -chardev socket,id=u0,host=127.0.0.1,port=4321,server=on,wait=on -serial chardev:u0 \
             -semihosting-config enable=on,target=native -icount shift=0 -kernel fw.elf"
        );
    }

    #[test]
    fn semihosting_args_escape_commas_and_riscv_boots_without_bios() {
        let q = Qemu::new(Machine::Riscv32Virt, "t.elf")
            .semihosting_arg("run_addr")
            .semihosting_arg("a,b");
        assert_eq!(
            line(&q),
            "qemu-system-riscv32 -machine virt -bios none -display none -monitor none -serial none \
             -semihosting-config enable=on,target=native,arg=run_addr,arg=a,,b -kernel t.elf"
        );
        let m3 = Qemu::new(Machine::Mps2An385, "t.elf");
        assert!(line(&m3).starts_with("qemu-system-arm -machine mps2-an385 -cpu cortex-m3 "));
    }

    #[test]
    fn a_missing_program_is_named_in_the_error() {
        // A kernel path that cannot matter: the error must come from the program or the file.
        let q = Qemu::new(Machine::Mps2An385, "/nonexistent/image.elf");
        match q.run(Duration::from_secs(20)) {
            Err(Error::Spawn { program, .. }) => assert_eq!(program, "qemu-system-arm"),
            // QEMU is installed: it must refuse the missing kernel with a non-zero exit.
            Ok(f) => {
                assert!(!f.success() && !f.timed_out, "{f:?}");
                assert!(f.output().contains("image.elf"), "{}", f.output());
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn connecting_without_a_socket_is_an_error() {
        let mut r = Running {
            child: Command::new("true").spawn().expect("`true` runs"),
            serial: Serial::None,
        };
        let e = r.connect_serial(Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("serial_socket"), "{e}");
    }
}
