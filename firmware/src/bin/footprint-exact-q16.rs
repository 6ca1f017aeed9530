//! Footprint image, Q16.16 fixed point: one 300-rating training round at K = 50 with exact reconstruction (see `fedrecon_firmware::footprint`).
#![no_std]
#![no_main]

fedrecon_firmware::footprint_image!(
    fedrecon_core::Q16,
    "exact-q16",
    fedrecon_firmware::footprint::exact_config
);
