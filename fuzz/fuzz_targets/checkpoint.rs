//! The checkpoint reader (`checkpoint.bin`, read by `train --resume`): any bytes are refused
//! with an error or decode to a checkpoint that encodes to exactly those bytes. Each input is
//! tried as a file and, behind a valid header (length and CRC-32 recomputed), as a body, so
//! mutations reach the body parser past the checksum.
#![no_main]

use fedrecon_core::wire::crc::crc32;
use fedrecon_host_sim::output::checkpoint::{Checkpoint, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(ck) = Checkpoint::decode(bytes) {
        assert_eq!(
            ck.encode(),
            bytes,
            "a decoded checkpoint re-encodes to its bytes"
        );
        let _ = ck.records();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let body = match data.strip_prefix(&MAGIC[..]) {
        Some(_) if data.len() >= 24 => &data[24..],
        _ => data,
    };
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32(body).to_le_bytes());
    file.extend_from_slice(body);
    check(&file);
});
