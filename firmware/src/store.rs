//! The board's own dataset in flash (WIRE.md kinds 12 and 13): one record holding the user's
//! ratings, the server's digest of them and a CRC-32 of the whole record, so a torn or
//! corrupted write is never mistaken for data (the board then holds none and says so).
//!
//! Record: `b"FRD1"`, `count: u32 LE`, `digest: u32 LE`, `count × (item: u32 LE, rating: f32
//! LE)`, then the CRC-32 of everything before it. [`DataStore`] is where the record lives,
//! written like flash (erase, then append): the QEMU images keep it in a host file through
//! semihosting (`semihosting_flash`, the emulated flash), a real board in a flash page.
//! Records stream in and out 8 bytes at a time, so no record-sized buffer is needed.

use fedrecon_core::wire::StoredData;
use fedrecon_core::wire::crc::Crc32;

const MAGIC: &[u8; 4] = b"FRD1";
const HEAD: usize = 12;

/// Bytes of a record of `n` ratings.
pub const fn record_len(n: usize) -> usize {
    HEAD + 8 * n + 4
}

/// Where a board keeps its record (flash, or a host file standing in for it).
pub trait DataStore {
    /// Reads up to `buf.len()` bytes at `offset` of the stored record; returns how many
    /// (fewer at its end, 0 when nothing is stored).
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> usize;
    /// Erases the record (the next [`Self::append`] starts a new one).
    fn erase(&mut self) -> bool;
    /// Appends bytes to the record; false when the write failed.
    fn append(&mut self, bytes: &[u8]) -> bool;
}

/// Replaces the stored record by the record of `ratings` with the server's `digest`; false
/// when a write failed (a later [`read_record`] then finds no valid record).
pub fn write_record(
    store: &mut dyn DataStore,
    ratings: impl ExactSizeIterator<Item = (u32, f32)>,
    digest: u32,
) -> bool {
    let mut crc = Crc32::new();
    let mut put = |store: &mut dyn DataStore, bytes: &[u8]| {
        crc.update(bytes);
        store.append(bytes)
    };
    let mut head = [0u8; HEAD];
    head[..4].copy_from_slice(MAGIC);
    head[4..8].copy_from_slice(&(ratings.len() as u32).to_le_bytes());
    head[8..].copy_from_slice(&digest.to_le_bytes());
    if !store.erase() || !put(store, &head) {
        return false;
    }
    for (item, rating) in ratings {
        let mut r = [0u8; 8];
        r[..4].copy_from_slice(&item.to_le_bytes());
        r[4..].copy_from_slice(&rating.to_le_bytes());
        if !put(store, &r) {
            return false;
        }
    }
    store.append(&crc.finish().to_le_bytes())
}

/// The stored record, if there is a valid one (magic, length and CRC-32 all agree), at most
/// `max` ratings: visits its ratings in order (only after the whole record checked out) and
/// returns what it announces.
pub fn read_record(
    store: &mut dyn DataStore,
    max: usize,
    mut visit: impl FnMut(u32, f32),
) -> Option<StoredData> {
    let mut head = [0u8; HEAD];
    if store.read_at(0, &mut head) != HEAD || &head[..4] != MAGIC {
        return None;
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let n = word(&head[4..8]) as usize;
    if n > max {
        return None;
    }
    let rating_at = |store: &mut dyn DataStore, i: usize| {
        let mut r = [0u8; 8];
        (store.read_at(HEAD + 8 * i, &mut r) == 8).then_some(r)
    };
    let mut crc = Crc32::new();
    crc.update(&head);
    for i in 0..n {
        crc.update(&rating_at(store, i)?);
    }
    let mut tail = [0u8; 4];
    if store.read_at(HEAD + 8 * n, &mut tail) != 4 || word(&tail) != crc.finish() {
        return None;
    }
    for i in 0..n {
        let r = rating_at(store, i)?;
        visit(word(&r[..4]), f32::from_le_bytes([r[4], r[5], r[6], r[7]]));
    }
    Some(StoredData {
        ratings: n as u32,
        digest: word(&head[8..]),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A store in memory (a flash page that survives the board).
    #[derive(Default)]
    pub(crate) struct MemStore(pub(crate) Vec<u8>);

    impl DataStore for MemStore {
        fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> usize {
            let src = self.0.get(offset..).unwrap_or(&[]);
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        }
        fn erase(&mut self) -> bool {
            self.0.clear();
            true
        }
        fn append(&mut self, bytes: &[u8]) -> bool {
            self.0.extend_from_slice(bytes);
            true
        }
    }

    #[test]
    fn records_round_trip_and_corruption_is_refused() {
        let ratings = [(3u32, 4.0f32), (9, 1.5), (0, 5.0)];
        let mut store = MemStore::default();
        assert!(write_record(&mut store, ratings.iter().copied(), 0xabcd));
        assert_eq!(store.0.len(), record_len(3));
        let mut got = Vec::new();
        let info = read_record(&mut store, 10, |i, r| got.push((i, r))).unwrap();
        assert_eq!(
            info,
            StoredData {
                ratings: 3,
                digest: 0xabcd
            }
        );
        assert_eq!(got, ratings);
        assert!(
            read_record(&mut store, 2, |_, _| {}).is_none(),
            "over capacity"
        );
        for i in 0..store.0.len() {
            let mut bad = MemStore(store.0.clone());
            bad.0[i] ^= 0x10;
            let mut visited = 0;
            assert!(
                read_record(&mut bad, 10, |_, _| visited += 1).is_none(),
                "byte {i}"
            );
            assert_eq!(visited, 0, "nothing visited from a bad record");
        }
        let mut torn = MemStore(store.0[..store.0.len() - 1].to_vec());
        assert!(
            read_record(&mut torn, 10, |_, _| {}).is_none(),
            "torn write"
        );
        assert!(read_record(&mut MemStore::default(), 10, |_, _| {}).is_none());
    }
}
