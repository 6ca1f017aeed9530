//! The protocol loop on QEMU mps2-an386's UART0 in Q16.16 (`src/qemu_board.rs`: K from
//! `FEDRECON_FW_K`, default 50; up to 300 ratings; item biases kept). Boot it with the host
//! holding the serial link (see README.md, "Talking to the QEMU board"). Semihosting prints a
//! line when the loop starts; a panic exits QEMU with 101.
#![no_std]
#![no_main]

fedrecon_firmware::qemu_board_image!(fedrecon_core::Q16);
