//! The board's dataset record ([`crate::store`]) in NOR flash, over the `embedded-storage`
//! traits every HAL implements (the nRF52840's NVMC, the RP2040's XIP flash, ...): a region of
//! whole erase pages that the record is erased and then appended to, word by word.
//!
//! NOR flash only clears bits, so a region is erased before a record is written, and an append
//! is refused until then: after a reset the write position is unknown, and the protocol loop
//! only ever writes a whole record ([`crate::store::write_record`] erases first). A reset or
//! power loss mid-write leaves a record whose CRC fails, which reads as "no data".

use embedded_storage::nor_flash::NorFlash;

use crate::store::DataStore;

/// Why a region cannot hold records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// The region does not start and end on the flash's erase pages.
    NotPageAligned,
    /// The region lies (partly) outside the flash.
    OutOfBounds,
    /// The flash writes in units that do not divide the record's 4-byte fields.
    WriteSize,
}

/// A record store in `len` bytes of `flash` from `start`.
pub struct NorStore<F> {
    flash: F,
    start: u32,
    len: u32,
    /// Where the next append goes; `None` until the region is erased.
    cursor: Option<u32>,
}

impl<F: NorFlash> NorStore<F> {
    /// A store in `flash[start..start + len]`, which must be whole erase pages.
    pub fn new(flash: F, start: u32, len: u32) -> Result<Self, RegionError> {
        let page = F::ERASE_SIZE as u32;
        if page == 0 || !start.is_multiple_of(page) || len == 0 || !len.is_multiple_of(page) {
            return Err(RegionError::NotPageAligned);
        }
        if u64::from(start) + u64::from(len) > flash.capacity() as u64 {
            return Err(RegionError::OutOfBounds);
        }
        if F::WRITE_SIZE == 0 || !4usize.is_multiple_of(F::WRITE_SIZE) {
            return Err(RegionError::WriteSize);
        }
        Ok(Self {
            flash,
            start,
            len,
            cursor: None,
        })
    }

    /// The flash back (for a test's "reboot", or another user of the peripheral).
    pub fn free(self) -> F {
        self.flash
    }
}

impl<F: NorFlash> DataStore for NorStore<F> {
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> usize {
        let Ok(offset) = u32::try_from(offset) else {
            return 0;
        };
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        let aligned = |x: usize| x.is_multiple_of(F::READ_SIZE);
        if n == 0 || !aligned(offset as usize) || !aligned(n) {
            return 0;
        }
        match self.flash.read(self.start + offset, &mut buf[..n]) {
            Ok(()) => n,
            Err(_) => 0,
        }
    }

    fn erase(&mut self) -> bool {
        self.cursor = None;
        let ok = self.flash.erase(self.start, self.start + self.len).is_ok();
        if ok {
            self.cursor = Some(0);
        }
        ok
    }

    fn append(&mut self, bytes: &[u8]) -> bool {
        let Some(at) = self.cursor else {
            return false;
        };
        let fits = bytes.len() <= (self.len - at) as usize;
        if !fits || !bytes.len().is_multiple_of(F::WRITE_SIZE) {
            return false;
        }
        if self.flash.write(self.start + at, bytes).is_err() {
            // What was written is unknown: no further append until the next erase.
            self.cursor = None;
            return false;
        }
        self.cursor = Some(at + bytes.len() as u32);
        true
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::store::{read_record, record_len, write_record};
    use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};
    use std::vec;
    use std::vec::Vec;

    /// NOR flash in RAM with the nRF52840 NVMC's geometry (4 KB pages, 4-byte words) that
    /// enforces what real flash does: aligned writes that only clear bits, page erases to
    /// 0xFF. `fail_after` cuts the power: writes beyond that many words fail.
    struct RamFlash {
        bytes: Vec<u8>,
        fail_after: Option<usize>,
        words_written: usize,
    }

    impl RamFlash {
        fn new(pages: usize) -> Self {
            Self {
                bytes: vec![0xFF; pages * 4096],
                fail_after: None,
                words_written: 0,
            }
        }
    }

    impl ErrorType for RamFlash {
        type Error = NorFlashErrorKind;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
            let o = offset as usize;
            let src = self
                .bytes
                .get(o..o + bytes.len())
                .ok_or(NorFlashErrorKind::OutOfBounds)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.bytes.len()
        }
    }

    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
            let (from, to) = (from as usize, to as usize);
            if from % 4096 != 0 || to % 4096 != 0 {
                return Err(NorFlashErrorKind::NotAligned);
            }
            self.bytes
                .get_mut(from..to)
                .ok_or(NorFlashErrorKind::OutOfBounds)?
                .fill(0xFF);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            let o = offset as usize;
            if o % 4 != 0 || bytes.len() % 4 != 0 {
                return Err(NorFlashErrorKind::NotAligned);
            }
            for (i, word) in bytes.chunks_exact(4).enumerate() {
                if self.fail_after.is_some_and(|n| self.words_written >= n) {
                    return Err(NorFlashErrorKind::Other);
                }
                let dst = &mut self.bytes[o + 4 * i..o + 4 * i + 4];
                // NOR programming clears bits only: writing over written data is a bug.
                assert!(
                    dst.iter().zip(word).all(|(d, w)| d & w == *w),
                    "write over unerased flash at {}",
                    o + 4 * i
                );
                dst.copy_from_slice(word);
                self.words_written += 1;
            }
            Ok(())
        }
    }

    fn ratings(n: u32) -> impl ExactSizeIterator<Item = (u32, f32)> {
        (0..n).map(|i| (i * 7 + 3, 1.0 + (i % 9) as f32 * 0.5))
    }

    fn stored(store: &mut NorStore<RamFlash>, max: usize) -> Option<(u32, Vec<(u32, f32)>)> {
        let mut seen = Vec::new();
        read_record(store, max, |i, r| seen.push((i, r))).map(|s| {
            assert_eq!(s.ratings as usize, seen.len());
            (s.digest, seen)
        })
    }

    /// A record written to the last page of a flash survives a "reboot" (a new store over
    /// the same flash), is rewritten in place, and a blank page holds nothing.
    #[test]
    fn record_survives_a_reboot_and_is_rewritten() {
        let mut store = NorStore::new(RamFlash::new(4), 3 * 4096, 4096).unwrap();
        assert_eq!(stored(&mut store, 500), None, "blank flash holds nothing");
        assert!(write_record(&mut store, ratings(300), 0xDEAD_BEEF));
        let flash = store.free();
        let mut store = NorStore::new(flash, 3 * 4096, 4096).unwrap();
        let (digest, seen) = stored(&mut store, 500).unwrap();
        assert_eq!(digest, 0xDEAD_BEEF);
        assert_eq!(seen, ratings(300).collect::<Vec<_>>());
        // Appending before an erase is refused (the write position after a reset is unknown).
        assert!(!store.append(&[0; 4]));
        // A new record replaces the old one (the page is erased first, as NOR needs).
        assert!(write_record(&mut store, ratings(20), 7));
        assert_eq!(stored(&mut store, 500).unwrap().1.len(), 20);
        // Only its own page was touched.
        let flash = store.free();
        assert!(flash.bytes[..3 * 4096].iter().all(|&b| b == 0xFF));
    }

    /// Power lost mid-write (after the erase, during the ratings, before the CRC) leaves no
    /// record, never a wrong one; a record too big for the region is refused.
    #[test]
    fn torn_and_oversized_writes_hold_no_data() {
        let words = record_len(100) / 4;
        for cut in [0, 1, 3, words / 2, words - 1] {
            let mut flash = RamFlash::new(1);
            flash.fail_after = Some(cut);
            let mut store = NorStore::new(flash, 0, 4096).unwrap();
            assert!(
                !write_record(&mut store, ratings(100), 1),
                "cut at word {cut}"
            );
            let mut flash = store.free();
            flash.fail_after = None;
            let mut store = NorStore::new(flash, 0, 4096).unwrap();
            assert_eq!(stored(&mut store, 500), None, "cut at word {cut}");
        }
        let mut store = NorStore::new(RamFlash::new(1), 0, 4096).unwrap();
        let too_many = ((4096 - record_len(0)) / 8 + 1) as u32;
        assert!(!write_record(&mut store, ratings(too_many), 1));
        assert!(write_record(&mut store, ratings(too_many - 1), 1));
        assert_eq!(
            stored(&mut store, 1000).unwrap().1.len(),
            (too_many - 1) as usize
        );
        // A reader allowing fewer ratings than stored finds nothing it can hold.
        assert_eq!(stored(&mut store, 10), None);
    }

    /// Regions must be whole pages inside the flash.
    #[test]
    fn regions_are_whole_pages_inside_the_flash() {
        let new = |start, len| NorStore::new(RamFlash::new(2), start, len).err();
        assert_eq!(new(0, 8192), None);
        assert_eq!(new(100, 4096), Some(RegionError::NotPageAligned));
        assert_eq!(new(0, 100), Some(RegionError::NotPageAligned));
        assert_eq!(new(0, 0), Some(RegionError::NotPageAligned));
        assert_eq!(new(4096, 8192), Some(RegionError::OutOfBounds));
    }
}
