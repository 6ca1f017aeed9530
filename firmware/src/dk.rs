//! What the nRF52840-DK images share (`src/bin/nrf52840.rs` over the J-Link's UART,
//! `src/bin/nrf52840-usb.rs` over the nRF52840's own USB port): the device and row cache,
//! the user's dataset in the last flash page, and the serve loop.
//!
//! The dataset page is the last 4 KB of flash (`0xFF000`), which `memory-nrf52840.x` keeps
//! out of the image, so flashing a new image leaves the user's data in place. The record
//! format and checksum are `store`'s, as on QEMU; the NVMC erases the page and writes it
//! word by word (`nor_store`). Both images hold the device key they were built with and
//! authenticate every frame (core/WIRE.md 7).

use defmt_rtt as _;
use embedded_io::{Read, Write};
use fedrecon_core::Device;
use fedrecon_core::wire::auth::DeviceKey;
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::pac;
use panic_probe as _;
use static_cell::ConstStaticCell;

use crate::nor_store::NorStore;
use crate::{Board, BoardInfo, BoardKey, CachedRows, sealed_buf_len};

/// Embedding width (the presets' K).
pub const K: usize = 50;
/// Ratings per client the board accepts (the tutorial's and the paper's per-user cap).
pub const N: usize = 300;
const FB: usize = sealed_buf_len(K);
// The board's enrolled id and key (core/WIRE.md 7), from the build (`build.rs` checks them;
// `cargo build-fw` draws them and writes the enrolment line).
crate::device_key_from_env!();
/// The dataset page: the last 4 KB of the 1 MB flash (outside `memory-nrf52840.x`'s FLASH).
pub const STORE_START: usize = 0x000F_F000;
/// One NVMC page: a record of up to 510 ratings.
pub const STORE_LEN: usize = 4096;

static DEVICE: ConstStaticCell<Device<f32, N, K>> = ConstStaticCell::new(Device::new());
// Item biases kept (N of them, 1.2 KB): every model of the simulator runs on the board.
static ROWS: ConstStaticCell<CachedRows<f32, N, K, N>> = ConstStaticCell::new(CachedRows::new());

/// The dataset page behind the NVMC.
pub type Store = NorStore<Nvmc<pac::NVMC>>;

/// The store in the last flash page. Call once: it takes the NVMC and the page.
pub fn flash_store(nvmc: pac::NVMC) -> Store {
    // SAFETY: the page lies inside the nRF52840's 1 MB flash, outside every section the
    // linker places (memory-nrf52840.x ends FLASH below it), and this function runs once
    // (it consumes the NVMC peripheral, which exists once), so no other reference to it
    // exists; reads of flash are plain loads and the NVMC performs the writes.
    let page = unsafe { core::slice::from_raw_parts_mut(STORE_START as *mut u8, STORE_LEN) };
    match NorStore::new(Nvmc::new(nvmc, page), 0, STORE_LEN as u32) {
        Ok(store) => store,
        Err(e) => panic!("dataset page: {:?}", e),
    }
}

/// Serves the protocol on `link` forever, with the user's dataset in `store` (announced
/// when the server asks; provisioned by `Ratings` + `StoreRatings`, WIRE.md kinds 12, 13).
pub fn serve_forever(link: &mut (impl Read + Write), store: &mut Store, name: &str) -> ! {
    let info = BoardInfo {
        client: 0,
        firmware: crate::FIRMWARE_VERSION,
    };
    let mut board: Board<'_, f32, N, K, FB, N> =
        Board::with_store(DEVICE.take(), ROWS.take(), info, store);
    // No random source or boot counter here: the device nonce starts at 0 every boot (the
    // server's nonce is fresh per session, which is what keeps session keys apart).
    board.set_key(BoardKey {
        device: DEVICE_ID,
        key: DeviceKey(DEVICE_KEY),
        nonce: 0,
    });
    defmt::info!(
        "fedrecon nRF52840-DK board ({}): K={} N={} max_frame={} device={} stored ratings={}",
        name,
        K,
        N,
        FB,
        DEVICE_ID,
        board.owned().map_or(0, |s| s.ratings)
    );
    loop {
        // A link error (framing, overrun, the host closing the port) ends one session; log
        // it and serve the next (the host sees a refused or missing answer and can resend).
        match board.serve(link) {
            Ok(()) => defmt::warn!("link ended"),
            Err(e) => defmt::warn!("link error: {}", defmt::Debug2Format(&e)),
        }
    }
}
