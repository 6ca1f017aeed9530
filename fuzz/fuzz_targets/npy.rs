//! The NPY model reader (`recommend --model items.npy`): any bytes are refused with an error or
//! give a matrix whose data matches its shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((values, rows, cols)) = fedrecon_host_sim::output::parse_npy(data) {
        assert_eq!(Some(values.len()), rows.checked_mul(cols));
    }
});
