//! Records framed with valid CRCs through every wire decoder: the typed messages, row chunks,
//! sequence numbers and whole updates (layer two).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |&b| b as usize + 1);
    let stream = fedrecon_fuzz::framed(data.get(1..).unwrap_or_default());
    fedrecon_fuzz::check_stream(&stream, split);
});
