//! The body of the QEMU board images (`src/bin/qemu.rs` f32, `qemu-q16.rs` Q16.16,
//! `qemu-q12.rs` Q3.12): the protocol loop on mps2-an386's UART0 at width [`K`], up to [`N`]
//! ratings and rows, item biases kept (so every model of the simulator runs on them).
//!
//! `K` is chosen when the image is built: `FEDRECON_FW_K` (default 50), which
//! `cargo build-fw --k K` sets for the images it puts in `target/images/mps2-an386-kK/`
//! (README.md, "The K build matrix").

use crate::cmsdk_uart::{CmsdkUart, UART0_BASE};
use crate::semihosting_flash::FlashFile;
use crate::{Board, BoardInfo, BoardKey, CachedRows, sealed_buf_len};
use fedrecon_core::wire::auth::DeviceKey;
use fedrecon_core::{Device, Scalar};
use semihosting::io::Read as _;

/// The images' embedding width: `FEDRECON_FW_K` at build time, 50 without it.
pub const K: usize = match option_env!("FEDRECON_FW_K") {
    Some(k) => parse_k(k),
    None => 50,
};
/// Ratings and item rows a board holds per round.
pub const N: usize = 300;
/// The emulated flash's host file, relative to QEMU's working directory.
pub const FLASH_FILE: &core::ffi::CStr = c"fedrecon-flash.bin";
/// The board's key file (core/WIRE.md 7), relative to QEMU's working directory: written by
/// the simulator that boots the board (`host-sim/src/board/`, a fresh key per board), read
/// once at boot. Without it the board speaks plain frames.
pub const KEY_FILE: &core::ffi::CStr = c"fedrecon-key.bin";
/// Bytes of the key file: device id (`u32` LE), key (32 bytes), first session nonce (`u64` LE).
pub const KEY_FILE_LEN: usize = 4 + 32 + 8;
// Sealed frames are 20 bytes longer: the buffers fit them whether or not the board is keyed.
const FB: usize = sealed_buf_len(K);

/// The key the simulator provisioned in [`KEY_FILE`], if any (a file of another length is
/// ignored: the board stays plain and the simulator, expecting a session, refuses it).
fn provisioned_key() -> Option<BoardKey> {
    let mut f = semihosting::fs::File::open(KEY_FILE).ok()?;
    let mut b = [0u8; KEY_FILE_LEN + 1];
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if n != KEY_FILE_LEN {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[4..36]);
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&b[36..44]);
    Some(BoardKey {
        device: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        key: DeviceKey(key),
        nonce: u64::from_le_bytes(nonce),
    })
}

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
    let key = provisioned_key();
    let device_id = key.as_ref().map(|k| k.device);
    if let Some(key) = key {
        board.set_key(key);
    }
    semihosting::eprintln!(
        "fedrecon qemu board: {:?} K={} N={} max_frame={} own ratings={:?} device={:?}",
        S::KIND,
        K,
        N,
        FB,
        board.owned().map(|d| d.ratings),
        device_id
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
