//! The nRF52840-DK over the nRF52840's own USB port (the DK's "nRF USB" connector), as a USB
//! CDC-ACM serial device: the host sees `/dev/ttyACM*` with the kernel's `cdc_acm` driver and
//! `fedrecon train --device` talks to it as to the J-Link UART image (`nrf52840`), with the
//! same dataset page and serve loop (`dk`). The USB peripheral runs from the external 32 MHz
//! crystal (HFXO), which the image starts first.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use fedrecon_firmware::dk;
use fedrecon_firmware::usb_link::UsbLink;
use nrf52840_hal::clocks::{Clocks, ExternalOscillator, Internal, LfOscStopped};
use nrf52840_hal::pac;
use nrf52840_hal::usbd::{UsbPeripheral, Usbd};
use static_cell::StaticCell;
use usb_device::bus::UsbBusAllocator;

type HfxoClocks = Clocks<ExternalOscillator, Internal, LfOscStopped>;

static CLOCKS: StaticCell<HfxoClocks> = StaticCell::new();
static USB_BUS: StaticCell<UsbBusAllocator<Usbd<UsbPeripheral<'static>>>> = StaticCell::new();

#[entry]
fn main() -> ! {
    let p = pac::Peripherals::take().expect("peripherals taken once");
    let clocks: &'static HfxoClocks = CLOCKS.init(Clocks::new(p.CLOCK).enable_ext_hfosc());
    let bus = USB_BUS.init(UsbBusAllocator::new(Usbd::new(UsbPeripheral::new(
        p.USBD, clocks,
    ))));
    let mut link = match UsbLink::cdc_acm(bus, "fedrecon board (nRF52840-DK, f32)", "0001") {
        Ok(link) => link,
        Err(e) => panic!("USB descriptors refused: {:?}", defmt::Debug2Format(&e)),
    };
    let mut store = dk::flash_store(p.NVMC);
    dk::serve_forever(&mut link, &mut store, "USB")
}
