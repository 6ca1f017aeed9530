//! The model bundle reader (`recommend --model model.npz`): any bytes are refused with an error
//! or give a bundle whose arrays agree in length and whose encoding decodes to the same bytes.
#![no_main]

use fedrecon_host_sim::output::bundle::ModelBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = ModelBundle::decode(data) {
        assert_eq!(Some(b.items.len()), b.len().checked_mul(b.k));
        assert_eq!(b.item_biases.len(), b.len());
        // Bytes, not values: a NaN row is not equal to itself.
        let bytes = b.encode().expect("a decoded bundle encodes");
        let again = ModelBundle::decode(&bytes).expect("an encoded bundle decodes");
        assert_eq!(again.encode().unwrap(), bytes);
    }
});
