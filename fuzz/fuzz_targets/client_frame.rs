//! Whatever a client sends, the simulator's parse of it must not panic.
#![no_main]

use holdline_proto::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientFrame::parse(text);
        let _ = holdline_proto::topic::expand(text);
    }
});
