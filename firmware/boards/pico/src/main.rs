//! fedrecon board image for the Raspberry Pi Pico (RP2040): the serial protocol loop of
//! `fedrecon-firmware` over the RP2040's own USB port as a CDC-ACM serial device, so the board
//! appears on the host as `/dev/ttyACM0` (Linux) and `fedrecon train --device /dev/ttyACM0`
//! talks to it.
//!
//! Scalar: Q3.12. The RP2040's Cortex-M0+ has no FPU; on its instruction set (`cargo
//! footprint`, thumbv6m on QEMU mps2-an385) a 300-rating K = 50 round takes 1.17 M instructions
//! in Q3.12 against 9.05 M in soft-float f32 and 2.67 M in Q16.16, and Q3.12 halves the RAM.
#![no_std]
#![no_main]

use fedrecon_core::Device;
use fedrecon_core::Q12;
use fedrecon_core::wire::auth::DeviceKey;
use fedrecon_firmware::usb_link::UsbLink;
use fedrecon_firmware::{Board, BoardInfo, BoardKey, CachedRows, sealed_buf_len};
use panic_halt as _;
use rp2040_hal::{self as hal, pac};
use static_cell::{ConstStaticCell, StaticCell};
use usb_device::bus::UsbBusAllocator;

/// Embedding width (the presets' K).
const K: usize = 50;
/// Ratings per client the board accepts (the tutorial's and the paper's per-user cap).
const N: usize = 300;
const FB: usize = sealed_buf_len(K);
// The board's enrolled id and key (core/WIRE.md 7), given at build time and checked at
// compile time (firmware/README.md, "Device keys"); the simulator refuses unkeyed boards.
fedrecon_firmware::device_key_from_env!();
/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;

/// The second-stage bootloader the boot ROM runs from the first 256 bytes of flash (W25Q080
/// flash on the Pico).
#[unsafe(link_section = ".boot2")]
#[used]
static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

// Zero-initialised and const-constructed: both land in .bss, never on the stack.
static DEVICE: ConstStaticCell<Device<Q12, N, K>> = ConstStaticCell::new(Device::new());
static ROWS: ConstStaticCell<CachedRows<Q12, N, K>> = ConstStaticCell::new(CachedRows::new());
static USB_BUS: StaticCell<UsbBusAllocator<hal::usb::UsbBus>> = StaticCell::new();

#[hal::entry]
fn main() -> ! {
    let mut pac = pac::Peripherals::take().expect("peripherals taken once");
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        panic!("clock setup failed")
    };
    let bus = USB_BUS.init(UsbBusAllocator::new(hal::usb::UsbBus::new(
        pac.USBCTRL_REGS,
        pac.USBCTRL_DPRAM,
        clocks.usb_clock,
        true,
        &mut pac.RESETS,
    )));
    let Ok(mut link) = UsbLink::cdc_acm(bus, "fedrecon board (Pico, Q3.12)", "0001") else {
        panic!("USB strings refused")
    };
    let info = BoardInfo {
        client: 0,
        firmware: fedrecon_firmware::FIRMWARE_VERSION,
    };
    let mut board: Board<'_, Q12, N, K, FB> = Board::new(DEVICE.take(), ROWS.take(), info);
    // No random source used here: the device nonce starts at 0 every boot (the server's nonce
    // is fresh per session, which is what keeps session keys apart).
    board.set_key(BoardKey {
        device: DEVICE_ID,
        key: DeviceKey(DEVICE_KEY),
        nonce: 0,
    });
    loop {
        // A link error (the host closed the port mid-frame) ends one session; serve the next.
        let _ = board.serve(&mut link);
    }
}
