//! Writing records: straight into a byte buffer, the event body copied in as received
//! (never parsed into a tree or re-serialised), timestamps formatted without allocating.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BackfillDoneFields, BackfillFields, EventFields, GapFields, RejectedFields};

/// Appends one event record and a newline.
pub fn write_event(out: &mut Vec<u8>, e: &EventFields<'_>) {
    // One reservation for the record (the fixed text is under 160 bytes).
    let corr_len = e.correlation_id.map_or(0, <[u8]>::len);
    out.reserve(160 + e.body.len() + e.topic.len() + e.org.len() + e.channel.len() + corr_len);
    out.extend_from_slice(br#"{"kind":"event","id":""#);
    out.extend_from_slice(&e.id.to_hex());
    out.extend_from_slice(br#"","topic":"#);
    write_utf8(out, e.topic);
    out.extend_from_slice(br#","received_at":""#);
    write_rfc3339(out, e.received_at);
    out.extend_from_slice(br#"","org":"#);
    write_str(out, e.org);
    out.extend_from_slice(br#","channel":"#);
    write_str(out, e.channel);
    if let Some(corr) = e.correlation_id {
        out.extend_from_slice(br#","correlation_id":"#);
        write_utf8(out, corr);
    }
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(e.body);
    out.extend_from_slice(b"}\n");
}

/// Appends one gap record and a newline.
pub fn write_gap(out: &mut Vec<u8>, gap: &GapFields<'_>) {
    out.extend_from_slice(br#"{"kind":"gap","#);
    if let Some(id) = gap.id {
        out.extend_from_slice(br#""id":"#);
        write_str(out, id);
        out.push(b',');
    }
    out.extend_from_slice(br#""topics":["#);
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
    out.extend_from_slice(br#"","org":"#);
    write_str(out, gap.org);
    out.extend_from_slice(br#","reason":"#);
    write_str(out, gap.reason);
    out.extend_from_slice(b"}\n");
}

/// Appends one rejected-topic record and a newline.
pub fn write_rejected(out: &mut Vec<u8>, r: &RejectedFields<'_>) {
    out.extend_from_slice(br#"{"kind":"rejected","topic":"#);
    write_str(out, r.topic);
    out.extend_from_slice(br#","org":"#);
    write_str(out, r.org);
    out.extend_from_slice(br#","missing_permissions":["#);
    for (i, p) in r.missing_permissions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, p);
    }
    out.push(b']');
    if let Some(reason) = r.reason {
        out.extend_from_slice(br#","reason":"#);
        write_str(out, reason);
    }
    out.extend_from_slice(b"}\n");
}

/// Appends one back-fill record and a newline.
pub fn write_backfill(out: &mut Vec<u8>, b: &BackfillFields<'_>) {
    out.extend_from_slice(br#"{"kind":"backfill","id":"#);
    write_str(out, &format!("{}/{}/{}", b.gap, b.source, b.entity));
    out.extend_from_slice(br#","gap":"#);
    write_str(out, b.gap);
    out.extend_from_slice(br#","org":"#);
    write_str(out, b.org);
    out.extend_from_slice(br#","topic":"#);
    write_str(out, b.topic);
    out.extend_from_slice(br#","source":"#);
    write_str(out, b.source);
    out.extend_from_slice(br#","entity":"#);
    write_str(out, b.entity);
    out.extend_from_slice(br#","as_of":""#);
    write_rfc3339(out, b.as_of);
    out.extend_from_slice(br#"","body":"#);
    out.extend_from_slice(b.body);
    out.extend_from_slice(b"}\n");
}

/// Appends the record that closes a gap's back-fill, and a newline.
pub fn write_backfill_done(out: &mut Vec<u8>, d: &BackfillDoneFields<'_>) {
    out.extend_from_slice(br#"{"kind":"backfill_done","id":"#);
    write_str(out, &format!("{}/done", d.gap));
    out.extend_from_slice(br#","gap":"#);
    write_str(out, d.gap);
    out.extend_from_slice(br#","org":"#);
    write_str(out, d.org);
    out.extend_from_slice(br#","status":"#);
    write_str(out, d.status);
    out.extend_from_slice(br#","counts":{"#);
    for (i, (k, n)) in d.counts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        out.extend_from_slice(n.to_string().as_bytes());
    }
    out.push(b'}');
    if let Some(reason) = d.reason {
        out.extend_from_slice(br#","reason":"#);
        write_str(out, reason);
    }
    out.extend_from_slice(b"}\n");
}

/// Writes a JSON string literal of UTF-8 bytes (the frame's, checked when it arrived):
/// copied as they are when they need no escape, else escaped as text.
pub(super) fn write_utf8(out: &mut Vec<u8>, s: &[u8]) {
    if plain(s) {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    } else {
        write_str(out, std::str::from_utf8(s).unwrap_or_default());
    }
}

/// Writes a JSON string literal (fast path for text without escapes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a str cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// True when `s` needs no escape inside a JSON string: no `"`, `\\` or control character.
/// Eight bytes at a time: topics, channel ids and correlation ids are 36–80 bytes.
pub(super) fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // Each test is exact about whether some byte matches (borrows only ever run
        // upward from a byte that really does).
        if has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
            || w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0
        {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b))
}

pub(super) fn plain_byte(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

/// Writes `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds).
pub fn write_rfc3339(out: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        /// The last second written and its text: events come thousands to the second.
        static SECOND: Cell<Option<(u64, [u8; 20])>> = const { Cell::new(None) };
    }
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let head = SECOND.with(|last| match last.get() {
        Some((s, head)) if s == secs => head,
        _ => {
            let head = second(secs);
            last.set(Some((secs, head)));
            head
        }
    });
    let mut buf = [0u8; 27];
    buf[..20].copy_from_slice(&head);
    put_digits(&mut buf[20..26], u64::from(since.subsec_micros()));
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` since the epoch.
fn second(secs: u64) -> [u8; 20] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut buf = *b"0000-00-00T00:00:00.";
    put_digits(&mut buf[0..4], y as u64);
    put_digits(&mut buf[5..7], u64::from(m));
    put_digits(&mut buf[8..10], u64::from(d));
    put_digits(&mut buf[11..13], rem / 3600);
    put_digits(&mut buf[14..16], rem % 3600 / 60);
    put_digits(&mut buf[17..19], rem % 60);
    buf
}

/// Fills `slot` with the low decimal digits of `v`, zero-padded.
fn put_digits(slot: &mut [u8], mut v: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
    use std::time::{SystemTime, UNIX_EPOCH};

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

    #[test]
    fn the_remembered_second_is_only_reused_within_that_second() {
        let base = UNIX_EPOCH + Duration::from_secs(1_714_641_301);
        let cases = [
            (0, 120_456, "2024-05-02T09:15:01.120456Z"),
            (0, 999_999, "2024-05-02T09:15:01.999999Z"),
            (1, 0, "2024-05-02T09:15:02.000000Z"),
            (0, 5, "2024-05-02T09:15:01.000005Z"),
            (86_400, 7, "2024-05-03T09:15:01.000007Z"),
            (86_400, 8, "2024-05-03T09:15:01.000008Z"),
        ];
        for (secs, micros, expected) in cases {
            let at = base + Duration::from_secs(secs) + Duration::from_micros(micros);
            assert_eq!(rfc(at), expected);
        }
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

        #[test]
        fn the_plain_test_is_exact(
            s in prop::collection::vec(prop_oneof![
                8 => 0x20u8..0x7f, 1 => 0u8..0x20, 1 => Just(b'"'), 1 => Just(b'\\'), 2 => 0x80u8..=0xff,
            ], 0..40)
        ) {
            prop_assert_eq!(plain(&s), s.iter().all(|&b| plain_byte(b)), "{:x?}", s);
        }
    }
}
