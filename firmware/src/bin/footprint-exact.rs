//! Footprint image, f32: one 300-rating training round at K = 50 with exact reconstruction (see `fedrecon_firmware::footprint`).
#![no_std]
#![no_main]

fedrecon_firmware::footprint_image!(f32, "exact-f32", fedrecon_firmware::footprint::exact_config);
