//! The body of the QEMU board images (`src/bin/qemu.rs` f32, `qemu-q16.rs` Q16.16,
//! `qemu-q12.rs` Q3.12): the protocol loop on mps2-an386's UART0 at width [`K`], up to [`N`]
//! ratings and rows, item biases kept (so every model of the simulator runs on them).
//!
//! `K` is chosen when the image is built: `FEDRECON_FW_K` (default 50), which
//! `cargo build-fw --k K` sets for the images it puts in `target/images/mps2-an386-kK/`
//! (README.md, "The K build matrix").

use crate::cmsdk_uart::{CmsdkUart, UART0_BASE};
use crate::semihosting_flash::FlashFile;
use crate::{Board, BoardInfo, CachedRows};
use fedrecon_core::wire::max_frame_buf_len;
use fedrecon_core::{Device, Scalar};

/// The images' embedding width: `FEDRECON_FW_K` at build time, 50 without it.
pub const K: usize = match option_env!("FEDRECON_FW_K") {
    Some(k) => parse_k(k),
    None => 50,
};
/// Ratings and item rows a board holds per round.
pub const N: usize = 300;
/// The emulated flash's host file, relative to QEMU's working directory.
pub const FLASH_FILE: &core::ffi::CStr = c"fedrecon-flash.bin";
const FB: usize = max_frame_buf_len(K);

/// `FEDRECON_FW_K` as a number; any other text stops the build with this message.
const fn parse_k(s: &str) -> usize {
    let b = s.as_bytes();
    assert!(
        !b.is_empty() && b.len() <= 4,
        "FEDRECON_FW_K must be a width between 1 and 1024"
    );
    let mut k = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "FEDRECON_FW_K must be a decimal number"
        );
        k = k * 10 + (b[i] - b'0') as usize;
        i += 1;
    }
    assert!(
        k >= 1 && k <= 1024,
        "FEDRECON_FW_K must be between 1 and 1024"
    );
    k
}

/// Serves UART0 forever with `device` and `rows` (the image's statics).
pub fn run<S: Scalar>(device: &mut Device<S, N, K>, rows: &mut CachedRows<S, N, K, N>) -> ! {
    // SAFETY: UART0 is used by nothing else in these images (semihosting does not touch it).
    let mut uart = unsafe { CmsdkUart::new_sleeping(UART0_BASE, 16, 0, 1) };
    let info = BoardInfo {
        client: 0,
        firmware: crate::FIRMWARE_VERSION,
    };
    // The emulated flash: a host file in QEMU's working directory (the simulator gives each
    // board with its own user a directory of its own).
    let mut flash = FlashFile::new(FLASH_FILE);
    let mut board: Board<'_, S, N, K, FB, N> = Board::with_store(device, rows, info, &mut flash);
    semihosting::eprintln!(
        "fedrecon qemu board: {:?} K={} N={} max_frame={} own ratings={:?}",
        S::KIND,
        K,
        N,
        FB,
        board.owned().map(|d| d.ratings)
    );
    // A UART never reaches end of input and cannot fail, so this only returns on a bug.
    let _ = board.serve(&mut uart);
    semihosting::process::exit(2)
}

/// Defines a QEMU board image computing in scalar `$s`: its workspace and row cache in
/// `.bss`, handed out once (the ~128 KB workspace never touches the stack), the entry point
/// running [`run`], and the panic handler. Each `bin/qemu*.rs` is one call.
#[macro_export]
macro_rules! qemu_board_image {
    ($s:ty) => {
        static DEVICE: static_cell::ConstStaticCell<
            fedrecon_core::Device<$s, { $crate::qemu_board::N }, { $crate::qemu_board::K }>,
        > = static_cell::ConstStaticCell::new(fedrecon_core::Device::new());
        static ROWS: static_cell::ConstStaticCell<
            $crate::CachedRows<
                $s,
                { $crate::qemu_board::N },
                { $crate::qemu_board::K },
                { $crate::qemu_board::N },
            >,
        > = static_cell::ConstStaticCell::new($crate::CachedRows::new());

        #[cortex_m_rt::entry]
        fn main() -> ! {
            $crate::qemu_board::run(DEVICE.take(), ROWS.take())
        }

        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
            $crate::qemu_panic(info)
        }
    };
}
