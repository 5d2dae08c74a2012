//! Whatever the network sends, parsing a server frame must not panic, and any notification
//! it finds must re-encode to a frame that parses to the same notification.
#![no_main]

use holdline_proto::ServerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = ServerFrame::parse(text) {
        if let ServerFrame::Notification(n) = &frame {
            let _ = holdline_proto::EventId::of(&n.topic, n.body.get().as_bytes());
        }
        let again = frame.to_json();
        assert_eq!(ServerFrame::parse(&again).ok().as_ref().map(std::mem::discriminant), Some(std::mem::discriminant(&frame)));
    }
});
