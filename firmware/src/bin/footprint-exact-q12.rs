//! Footprint image, Q3.12 fixed point (16-bit): one 300-rating training round at K = 50 with exact reconstruction (see `fedrecon_firmware::footprint`).
#![no_std]
#![no_main]

fedrecon_firmware::footprint_image!(
    fedrecon_core::Q12,
    "exact-q12",
    fedrecon_firmware::footprint::exact_config
);
