//! The fast path for the frame that carries nearly all traffic: a notification envelope
//! (`topicName`, `version`, `eventBody`, `metadata.CorrelationId`) with plain strings.
//!
//! It validates the whole frame as strict JSON (RFC 8259) in one pass without building
//! anything, which is what the serde envelope spent most of its time on, and finds the
//! body's span on the way. It also checks the frame is UTF-8 in that pass (bytes above
//! 0x7f may only appear inside strings, where each sequence is checked as it is met), so
//! a frame std would refuse as text is refused here first. Strings are skipped
//! sixteen bytes at a time where SSE2 is there, else eight. Whenever the frame
//! is anything other than that plain shape (escapes in a key or in a field it returns,
//! a number where a string is expected, a repeated envelope field, a system or metadata
//! topic, nesting deeper than serde_json's limit, invalid JSON) it returns `None` and the
//! serde path decides, so the two can never disagree: a test checks they agree on
//! generated frames.

use std::borrow::Cow;
use std::ops::Range;

use super::server::{METADATA_TOPIC, Notification, RawJson, SYSTEM_PREFIX};

/// serde_json's default recursion limit; deeper frames go to the serde path (which
/// rejects them).
const MAX_DEPTH: usize = 128;

/// The notification in `payload`, if it has the plain shape (which includes being
/// UTF-8), and the payload as text.
pub(crate) fn notification(payload: &[u8]) -> Option<(&str, Notification<'_>)> {
    let found = envelope(payload)?;
    // The scan has checked every byte by UTF-8's rules already; std's check of the same
    // bytes makes them a `str` without an unchecked conversion, for one more pass.
    let text = std::str::from_utf8(payload).ok()?;
    let topic = &text[found.topic];
    if topic == METADATA_TOPIC || topic.starts_with(SYSTEM_PREFIX) {
        return None;
    }
    let notification = Notification {
        topic: Cow::Borrowed(topic),
        version: found.version.map(|r| Cow::Borrowed(&text[r])),
        correlation_id: found.correlation_id.map(|r| Cow::Borrowed(&text[r])),
        body: RawJson::validated(&text[found.body]),
    };
    Some((text, notification))
}

/// Where the envelope's fields lie in the payload.
struct Envelope {
    topic: Range<usize>,
    version: Option<Range<usize>>,
    correlation_id: Option<Range<usize>>,
    body: Range<usize>,
}

/// Scans the whole payload; `Some` only for the plain shape, valid JSON and UTF-8.
fn envelope(payload: &[u8]) -> Option<Envelope> {
    let mut s = Scanner { b: payload, i: 0 };
    let mut topic = None;
    let mut version = None;
    let mut body = None;
    let mut correlation_id = None;
    // Envelope fields seen: serde rejects a repeated one, so the fast path leaves it.
    let mut seen = 0u16;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        s.ws();
        let key = s.plain_string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let field = match &payload[key] {
            b"topicName" => 0,
            b"version" => 1,
            b"eventBody" => 2,
            b"metadata" => 3,
            b"correlationId" => 4,
            b"topics" => 5,
            b"result" => 6,
            b"status" => 7,
            b"message" => 8,
            _ => 9,
        };
        if field < 9 {
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
        }
        match field {
            0 => topic = Some(s.plain_string_value()?),
            1 => version = Some(s.plain_string_value()?),
            2 => {
                let start = s.i;
                s.value(0)?;
                body = Some(start..s.i);
            }
            3 => correlation_id = s.metadata()?,
            _ => s.value(0)?,
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    Some(Envelope {
        topic: topic?,
        version,
        correlation_id,
        body: body?,
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `w` (little-endian) that is `"`, `\`, a control
/// character (below 0x20) or not ASCII (above 0x7f). Bytes above a flagged one may be
/// flagged wrongly (borrows run upward), but the lowest flagged byte is always a real
/// one, and none is ever missed.
#[inline]
fn special(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    quote | backslash | control | (w & HIGHS)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// A bit for every byte of `chunk` that is `"`, `\`, below 0x20 or above 0x7f (exact).
    #[inline]
    pub(super) fn special(chunk: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is part of the x86-64 baseline; the load is unaligned and reads
        // exactly the 16 bytes of `chunk`.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned x <= 0x1f  <=>  max(x, 0x1f) == 0x1f.
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            // The sign bit of each byte is the non-ASCII one.
            let special = _mm_or_si128(_mm_or_si128(quote, backslash), _mm_or_si128(control, v));
            _mm_movemask_epi8(special) as u32
        }
    }
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Moves to the next quote, backslash, control character or non-ASCII byte (or the
    /// end): sixteen bytes at a time where SSE2 is there (every x86-64), else eight.
    #[inline]
    fn skip_plain(&mut self) {
        #[cfg(target_arch = "x86_64")]
        while let Some(chunk) = self.b.get(self.i..self.i + 16) {
            let Ok(chunk) = chunk.try_into() else { break };
            let mask = sse2::special(chunk);
            if mask != 0 {
                self.i += mask.trailing_zeros() as usize;
                return;
            }
            self.i += 16;
        }
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let Ok(chunk) = chunk.try_into() else { break };
            let mask = special(u64::from_le_bytes(chunk));
            if mask != 0 {
                self.i += (mask.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c) {
                return;
            }
            self.i += 1;
        }
    }

    /// Skips a string (at its opening quote); true if it held an escape.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                0x80.. => {
                    self.i -= 1;
                    self.utf8_char()?;
                }
                _ => return None,
            }
        }
    }

    /// Steps over the UTF-8 sequence at a non-ASCII byte, checking it as
    /// `str::from_utf8` does: no overlong forms, no surrogates, nothing above U+10FFFF.
    #[inline]
    fn utf8_char(&mut self) -> Option<()> {
        let (len, second) = match self.b[self.i] {
            0xc2..=0xdf => (2, 0x80..=0xbf),
            0xe0 => (3, 0xa0..=0xbf),
            0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
            0xed => (3, 0x80..=0x9f),
            0xf0 => (4, 0x90..=0xbf),
            0xf1..=0xf3 => (4, 0x80..=0xbf),
            0xf4 => (4, 0x80..=0x8f),
            _ => return None,
        };
        let seq = self.b.get(self.i..self.i + len)?;
        if !second.contains(&seq[1]) || seq[2..].iter().any(|&c| c & 0xc0 != 0x80) {
            return None;
        }
        self.i += len;
        Some(())
    }

    /// The span of a string without escapes, quotes left out.
    fn plain_string(&mut self) -> Option<Range<usize>> {
        let start = self.i + 1;
        if self.string()? {
            return None;
        }
        Some(start..self.i - 1)
    }

    /// A field that must be a plain string for the fast path.
    fn plain_string_value(&mut self) -> Option<Range<usize>> {
        if self.peek()? != b'"' {
            return None;
        }
        self.plain_string()
    }

    /// `metadata`: an object; its first `CorrelationId` must be a plain string.
    fn metadata(&mut self) -> Option<Option<Range<usize>>> {
        if self.peek()? != b'{' {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(None);
        }
        let mut found = None;
        loop {
            self.ws();
            let key = self.plain_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            if &self.b[key] == b"CorrelationId" && found.is_none() {
                found = Some(self.plain_string_value()?);
            } else {
                self.value(1)?;
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(found),
                _ => return None,
            }
        }
    }

    /// Skips one JSON value, validating it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    #[inline(always)]
    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(json: &str) -> bool {
        let mut s = Scanner {
            b: json.as_bytes(),
            i: 0,
        };
        s.ws();
        s.value(0).is_some() && {
            s.ws();
            s.i == json.len()
        }
    }

    #[test]
    fn the_validator_agrees_with_serde_json() {
        let cases = [
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"y\u00e9\n"],"b":{}}"#,
            r#"  [ ]  "#,
            r#""plain text long enough to take the eight-byte path, and some more""#,
            r#""é ü 中文 and 😀 in a string""#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"line\nbreak in a long string value\"}",
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1}}"#,
            r#"{"a":[1,2}"#,
            r#""unterminated"#,
            r#"nul"#,
            "",
        ];
        for case in cases {
            let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(valid(case), serde_ok, "{case:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            !valid(&deep),
            "deeper than serde_json's limit goes to serde"
        );
    }

    #[test]
    fn the_special_byte_mask_points_at_the_first_special_byte() {
        for pos in 0..8 {
            for c in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                for later in [b'a', b'"', 0x01, 0xff] {
                    let mut w = *b"abcdefgh";
                    w[pos] = c;
                    if pos < 7 {
                        w[7] = later;
                    }
                    let mask = special(u64::from_le_bytes(w));
                    assert_eq!(mask.trailing_zeros() / 8, pos as u32, "{c:#x} at {pos}");
                }
            }
        }
        assert_eq!(special(u64::from_le_bytes(*b"ab cd/ef")), 0);
        assert_eq!(special(u64::from_le_bytes(*b"~ }{\x7f]!a")), 0);
        for pos in 0..8 {
            for c in [0x80, 0xc3, 0xff] {
                let mut w = *b"abcdefgh";
                w[pos] = c;
                let mask = special(u64::from_le_bytes(w));
                assert_eq!(mask.trailing_zeros() / 8, pos as u32, "{c:#x} at {pos}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        for pos in 0..16 {
            for c in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xc3, 0xff] {
                let mut w = *b"abcdefgh ~\x7f{}[]!";
                w[pos] = c;
                assert_eq!(sse2::special(&w), 1 << pos, "{c:#x} at {pos}");
            }
        }
    }
}
