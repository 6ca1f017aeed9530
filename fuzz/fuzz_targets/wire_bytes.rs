//! Raw bytes through every wire decoder (COBS, CRC, packets, lengths, the accumulator): layer one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |&b| b as usize + 1);
    fedrecon_fuzz::check_stream(data, split);
});
