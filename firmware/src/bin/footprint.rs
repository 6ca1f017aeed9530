//! Footprint image, f32: one 300-rating training round at K = 50 (see `fedrecon_firmware::footprint`).
#![no_std]
#![no_main]

fedrecon_firmware::footprint_image!(f32, "f32", fedrecon_firmware::footprint::config);
