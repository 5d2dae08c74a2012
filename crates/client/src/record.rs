//! The JSON-lines records of DESIGN.md, written straight into a byte buffer: the event body
//! is copied in as received (never parsed into a tree or re-serialised), and timestamps
//! are formatted without allocating.
//!
//! ```json
//! {"kind":"event","id":"…","topic":"…","received_at":"…","org":"…","channel":"…","correlation_id":"…","body":{…}}
//! {"kind":"gap","topics":["…"],"from":"…","to":"…","reason":"…"}
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Gap, Notification};

/// Appends one event record and a newline.
pub fn write_event(out: &mut Vec<u8>, n: &Notification, org: &str) {
    out.extend_from_slice(br#"{"kind":"event","id":""#);
    out.extend_from_slice(&n.id.to_hex());
    out.extend_from_slice(br#"","topic":"#);
    write_str(out, n.topic());
    out.extend_from_slice(br#","received_at":""#);
    write_rfc3339(out, n.received_at);
    out.extend_from_slice(br#"","org":"#);
    write_str(out, org);
    out.extend_from_slice(br#","channel":"#);
    write_str(out, &n.channel);
    if let Some(corr) = n.correlation_id() {
        out.extend_from_slice(br#","correlation_id":"#);
        write_str(out, corr);
    }
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(n.body().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Appends one gap record and a newline.
pub fn write_gap(out: &mut Vec<u8>, gap: &Gap) {
    out.extend_from_slice(br#"{"kind":"gap","topics":["#);
    for (i, topic) in gap.topics.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, topic);
    }
    out.extend_from_slice(br#"],"from":""#);
    write_rfc3339(out, gap.from);
    out.extend_from_slice(br#"","to":""#);
    write_rfc3339(out, gap.to);
    out.extend_from_slice(br#"","reason":"#);
    write_str(out, &gap.reason);
    out.extend_from_slice(b"}\n");
}

/// Writes a JSON string literal (fast path for text without escapes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a str cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Writes `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds).
pub fn write_rfc3339(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut buf = [0u8; 27];
    let put = |buf: &mut [u8], at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut buf, 0, 4, y as u64);
    buf[4] = b'-';
    put(&mut buf, 5, 2, m as u64);
    buf[7] = b'-';
    put(&mut buf, 8, 2, d as u64);
    buf[10] = b'T';
    put(&mut buf, 11, 2, (rem / 3600) as u64);
    buf[13] = b':';
    put(&mut buf, 14, 2, (rem % 3600 / 60) as u64);
    buf[16] = b':';
    put(&mut buf, 17, 2, (rem % 60) as u64);
    buf[19] = b'.';
    put(&mut buf, 20, 6, u64::from(since.subsec_micros()));
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn rfc(at: SystemTime) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, at);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(rfc(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let at = UNIX_EPOCH + Duration::new(1_714_641_301, 120_456_789);
        assert_eq!(rfc(at), "2024-05-02T09:15:01.120456Z");
    }

    proptest! {
        #[test]
        fn timestamps_agree_with_the_time_crate(secs in 0i64..8_000_000_000, micros in 0u32..1_000_000) {
            let at = UNIX_EPOCH + Duration::new(secs as u64, micros * 1000);
            let expected = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let text = rfc(at);
            let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
            prop_assert_eq!(parsed.unix_timestamp(), expected.unix_timestamp());
            prop_assert_eq!(parsed.microsecond(), micros);
        }

        #[test]
        fn strings_are_valid_json(s in "\\PC{0,40}") {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn gap_record_is_the_documented_shape() {
        let gap = Gap {
            topics: vec!["a".to_owned(), "b".to_owned()].into(),
            from: UNIX_EPOCH,
            to: UNIX_EPOCH + Duration::from_secs(1),
            reason: "socket dropped: \"reset\"".into(),
        };
        let mut out = Vec::new();
        write_gap(&mut out, &gap);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "gap");
        assert_eq!(v["topics"], serde_json::json!(["a", "b"]));
        assert_eq!(v["to"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(v["reason"], "socket dropped: \"reset\"");
        assert!(out.ends_with(b"}\n"));
    }
}
