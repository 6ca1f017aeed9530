//! The QEMU images' emulated flash: the board's record (`crate::store`) in a host file
//! through semihosting, so it survives the QEMU process (a reboot, a power loss). mps2's own
//! flash is RAM to QEMU and lost when it exits.

use crate::store::DataStore;
use semihosting::fs::File;
use semihosting::io::{Read as _, Seek as _, SeekFrom, Write as _};

/// The record in the host file `path` (relative to QEMU's working directory).
#[derive(Debug)]
pub struct FlashFile {
    path: &'static core::ffi::CStr,
    /// The file being appended to between `erase` and the last `append`.
    writing: Option<File>,
}

impl FlashFile {
    /// The emulated flash in `path`.
    pub const fn new(path: &'static core::ffi::CStr) -> Self {
        Self {
            path,
            writing: None,
        }
    }
}

impl DataStore for FlashFile {
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> usize {
        let Ok(mut f) = File::open(self.path) else {
            return 0;
        };
        if f.seek(SeekFrom::Start(offset as u64)).is_err() {
            return 0;
        }
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }

    fn erase(&mut self) -> bool {
        self.writing = File::create(self.path).ok();
        self.writing.is_some()
    }

    fn append(&mut self, bytes: &[u8]) -> bool {
        self.writing
            .as_mut()
            .is_some_and(|f| f.write_all(bytes).is_ok())
    }
}
