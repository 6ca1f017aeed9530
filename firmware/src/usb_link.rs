//! A USB CDC-ACM serial port as an `embedded-io` link, for any HAL's USB device
//! (`usb-device`'s `UsbBus`: the RP2040's in the Pico image, the nRF52840's USBD in the
//! DK's USB image), so [`crate::Board::serve`] runs on it unchanged and the host opens it as
//! `/dev/ttyACM0` with nothing but the kernel's `cdc_acm` driver.
//!
//! USB must be polled every few milliseconds while the host enumerates and moves data, so
//! every wait polls the device.

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use usb_device::UsbError;
use usb_device::bus::{UsbBus, UsbBusAllocator};
use usb_device::prelude::{
    BuilderError, StringDescriptors, UsbDevice, UsbDeviceBuilder, UsbVidPid,
};
use usbd_serial::SerialPort;

/// pid.codes' test VID/PID for CDC-ACM: the host's `cdc_acm` driver binds without a driver
/// of ours.
const VID_PID: UsbVidPid = UsbVidPid(0x16c0, 0x27dd);

/// The device and its one serial function.
pub struct UsbLink<'a, B: UsbBus> {
    device: UsbDevice<'a, B>,
    serial: SerialPort<'a, B>,
}

impl<'a, B: UsbBus> UsbLink<'a, B> {
    /// A CDC-ACM device on `bus` announcing `product` (and serial number `serial`).
    pub fn cdc_acm(
        bus: &'a UsbBusAllocator<B>,
        product: &'static str,
        serial: &'static str,
    ) -> Result<Self, BuilderError> {
        let port = SerialPort::new(bus);
        let device = UsbDeviceBuilder::new(bus, VID_PID)
            .strings(&[StringDescriptors::default()
                .manufacturer("fedrecon")
                .product(product)
                .serial_number(serial)])?
            .device_class(usbd_serial::USB_CLASS_CDC)
            .build();
        Ok(Self {
            device,
            serial: port,
        })
    }

    fn poll(&mut self) {
        self.device.poll(&mut [&mut self.serial]);
    }

    /// Polls until `op` moves data (or fails): USB transfers complete only while polled.
    fn until_ready<T>(
        &mut self,
        mut op: impl FnMut(&mut SerialPort<'a, B>) -> Result<T, UsbError>,
        done: impl Fn(&T) -> bool,
    ) -> Result<T, ErrorKind> {
        loop {
            self.poll();
            match op(&mut self.serial) {
                Ok(v) if done(&v) => return Ok(v),
                Ok(_) | Err(UsbError::WouldBlock) => {}
                Err(_) => return Err(ErrorKind::Other),
            }
        }
    }
}

impl<B: UsbBus> ErrorType for UsbLink<'_, B> {
    type Error = ErrorKind;
}

impl<B: UsbBus> Read for UsbLink<'_, B> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.until_ready(|s| s.read(buf), |&n| n > 0)
    }
}

impl<B: UsbBus> Write for UsbLink<'_, B> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.until_ready(|s| s.write(buf), |&n| n > 0)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        self.until_ready(|s| s.flush(), |_| true)
    }
}
