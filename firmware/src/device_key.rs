//! A real board's device id and key, given at build time (`FEDRECON_DEVICE_ID`: a decimal
//! `u32`; `FEDRECON_DEVICE_KEY`: 64 hex digits), parsed in `const` context so a malformed
//! value stops the build with the reason instead of producing a board nobody can enrol.
//! `cargo build-fw` draws them for the nRF52840-DK images; firmware/README.md, "Device keys".

/// Defines `DEVICE_ID: u32` and `DEVICE_KEY: [u8; 32]` in the calling crate from the build's
/// `FEDRECON_DEVICE_ID` and `FEDRECON_DEVICE_KEY` (read when that crate compiles, so each board
/// image carries its own), parsed by [`id`] and [`key`]; a missing variable stops the build
/// naming both and where they are explained.
#[macro_export]
macro_rules! device_key_from_env {
    () => {
        /// The board's enrolled id (core/WIRE.md 7), from the build.
        const DEVICE_ID: u32 = $crate::device_key::id(env!(
            "FEDRECON_DEVICE_ID",
            "set FEDRECON_DEVICE_ID and FEDRECON_DEVICE_KEY (firmware/README.md, Device keys)"
        ));
        /// The board's enrolled key (core/WIRE.md 7), from the build.
        const DEVICE_KEY: [u8; 32] = $crate::device_key::key(env!(
            "FEDRECON_DEVICE_KEY",
            "set FEDRECON_DEVICE_ID and FEDRECON_DEVICE_KEY (firmware/README.md, Device keys)"
        ));
    };
}

/// The decimal device id `s`; a compile error (in a `const`) if it is not a `u32`.
pub const fn id(s: &str) -> u32 {
    let b = s.as_bytes();
    assert!(
        !b.is_empty() && b.len() <= 10,
        "FEDRECON_DEVICE_ID: a decimal u32"
    );
    let mut v: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "FEDRECON_DEVICE_ID: a decimal u32");
        v = v * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    assert!(v <= u32::MAX as u64, "FEDRECON_DEVICE_ID: a decimal u32");
    v as u32
}

/// The 32-byte key written as 64 hex digits in `s`; a compile error (in a `const`) otherwise.
pub const fn key(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    assert!(b.len() == 64, "FEDRECON_DEVICE_KEY: 64 hex digits");
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = (hex(b[2 * i]) << 4) | hex(b[2 * i + 1]);
        i += 1;
    }
    k
}

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("FEDRECON_DEVICE_KEY: not a hex digit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_keys() {
        const ID: u32 = id("4294967295");
        assert_eq!(ID, u32::MAX);
        assert_eq!(id("0"), 0);
        let k = key("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F");
        assert_eq!(k, core::array::from_fn(|i| i as u8));
    }

    #[test]
    #[should_panic(expected = "FEDRECON_DEVICE_ID")]
    fn refuses_an_id_beyond_u32() {
        id("4294967296");
    }

    #[test]
    #[should_panic(expected = "not a hex digit")]
    fn refuses_a_key_with_a_non_hex_digit() {
        // 64 characters, the second not a hex digit.
        key("0g00000000000000000000000000000000000000000000000000000000000000");
    }

    #[test]
    #[should_panic(expected = "64 hex digits")]
    fn refuses_a_short_key() {
        key("00");
    }
}
