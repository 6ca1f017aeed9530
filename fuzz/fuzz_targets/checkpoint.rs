//! The checkpoint reader (`checkpoint.bin`, read by `train --resume`): any bytes are refused
//! with an error or decode to a checkpoint that encodes to exactly those bytes.
#![no_main]

use fedrecon_host_sim::output::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = Checkpoint::decode(data) {
        assert_eq!(
            ck.encode(),
            data,
            "a decoded checkpoint re-encodes to its bytes"
        );
        let _ = ck.records();
    }
});
