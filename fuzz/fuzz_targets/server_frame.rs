//! Whatever the network sends, parsing a server frame must not panic, its UTF-8 check must
//! agree with the standard library's, and any notification it finds must re-encode to a
//! frame that parses to the same notification.
#![no_main]

use holdline_proto::ServerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The payload as it comes off the socket: the parse checks UTF-8 itself.
    let parsed = ServerFrame::parse_payload(data);
    assert_eq!(parsed.is_ok(), std::str::from_utf8(data).is_ok());
    let Ok((text, frame)) = parsed else { return };
    assert_eq!(text.as_bytes(), data);
    assert_eq!(frame, ServerFrame::parse(text));
    if let Ok(frame) = frame {
        if let ServerFrame::Notification(n) = &frame {
            let _ = holdline_proto::EventId::of(&n.topic, n.body.get().as_bytes());
        }
        let again = frame.to_json();
        assert_eq!(ServerFrame::parse(&again).ok().as_ref().map(std::mem::discriminant), Some(std::mem::discriminant(&frame)));
    }
});
