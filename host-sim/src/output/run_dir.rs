//! Ownership of a run directory: one process at a time writes into `--out` or resumes it.
//!
//! A run claims its directory by taking an exclusive advisory lock (`flock`) on
//! [`LOCK_FILE`] inside it, and holds it until the process ends (the kernel releases it even
//! on SIGKILL, so a crashed run never leaves a stale lock). The lock file says who holds it
//! (pid and start time), so a second writer or resumer fails at once naming the holder. The
//! emptiness check of a fresh run happens under the lock, so two runs started together cannot
//! both pass it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use fs4::{FileExt, TryLockError};

/// The lock file's name inside a run directory (not an output: never overwritten by a run).
pub const LOCK_FILE: &str = ".fedrecon.lock";

/// A run directory this process owns until the value is dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Holds the lock (released when closed).
    _lock: File,
}

impl RunDir {
    /// Claims `dir` for a new run: creates it if needed, locks it, and refuses a directory
    /// holding anything but the lock file unless `force` (the output policy of
    /// [`crate::output`]).
    pub fn create(dir: &Path, force: bool) -> Result<RunDir> {
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => bail!("{}: exists and is not a directory", dir.display()),
            Ok(_) => {}
            Err(_) => fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the directory", dir.display()))?,
        }
        let claimed = Self::lock(dir)?;
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list the directory", dir.display()))?;
        let other = entries.any(|e| e.map_or(true, |e| e.file_name() != LOCK_FILE));
        if other && !force {
            bail!(
                "{}: directory is not empty; refusing to overwrite a previous run \
                 (choose a new directory, or allow overwriting fedrecon's files in it)",
                dir.display()
            );
        }
        Ok(claimed)
    }

    /// Claims the existing run directory `dir` (for `--resume`).
    pub fn open(dir: &Path) -> Result<RunDir> {
        if !dir.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
        Self::lock(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(dir: &Path) -> Result<RunDir> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open {}", dir.display(), path.display()))?;
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "{}: the run directory is in use by {} (lock file {}); wait for it \
                     to finish or stop it first",
                    dir.display(),
                    if holder.is_empty() {
                        "another fedrecon process"
                    } else {
                        holder
                    },
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot lock {}", dir.display(), path.display()));
            }
        }
        let who = format!(
            "fedrecon pid {} (started {})\n",
            std::process::id(),
            utc_now()
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(who.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(RunDir {
            path: dir.to_path_buf(),
            _lock: file,
        })
    }
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
