//! The authentication layer (core/WIRE.md 7): records framed with a valid CRC through
//! `SessionOpen::check` and a device's `Session::open`, interleaved with genuine sealed frames
//! (a record whose first byte is 0xFF stands for the server's next one), so the sequence state
//! is exercised too. Nothing panics, no fuzzed record opens, and every genuine frame opens
//! whatever came before it.
#![no_main]

use fedrecon_core::wire::auth::{DeviceKey, Role, Session, SessionOpen, sealed_frame_buf_len};
use fedrecon_core::wire::{Kind, Message, TopKRequest, next_raw_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey([0x42; 32]);
    let mut server = Session::new(&key, Role::Server, 1, 99, 7);
    let mut device = Session::new(&key, Role::Device, 1, 99, 7);
    let mut raw = vec![0u8; sealed_frame_buf_len(4096)];
    let mut round = 0u32;
    for record in fedrecon_fuzz::records(data) {
        let mut stream = Vec::new();
        let genuine = record.first() == Some(&0xFF);
        if genuine {
            round += 1;
            let mut buf = vec![0u8; sealed_frame_buf_len(16)];
            let n = server
                .seal_frame(Kind::TopKRequest, &TopKRequest { round, k: 3 }, &mut buf)
                .expect("a TopKRequest fits");
            stream.extend_from_slice(&buf[..n]);
        } else {
            fedrecon_fuzz::push_frame(record, &mut stream);
        }
        let Ok(Some(r)) = next_raw_frame(&stream, &mut raw).1 else {
            assert!(!genuine, "a genuine frame failed COBS");
            continue;
        };
        let _ = SessionOpen::check(r);
        match device.open(r) {
            Ok(frame) => {
                assert!(genuine, "a fuzzed frame opened");
                let msg = Message::decode::<{ fedrecon_fuzz::K }>(&frame);
                assert!(matches!(msg, Ok(Message::TopKRequest(t)) if t.round == round));
            }
            Err(e) => assert!(!genuine, "a genuine frame was refused: {e}"),
        }
    }
});
