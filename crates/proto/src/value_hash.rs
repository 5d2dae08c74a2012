//! A hash of a JSON text's *value*: the same for every serialisation of the same value.
//!
//! Object members hash in any order, whitespace is skipped, strings hash as their decoded
//! characters (`"\u00e9"`, `"é"` and `"\/"` versus `"/"` agree) and numbers as their
//! decimal value (`1200`, `1.2e3`, `12.00E2` agree; integers and floats of the same value
//! too). Arrays keep their order. One pass over the text: a string without escapes is
//! hashed where it lies, containers are folded on a fixed-depth stack.
//!
//! Text that is not JSON, nests deeper than [`MAX_DEPTH`] or has a number of more than
//! [`MAX_DIGITS`] significant digits has no value hash; callers fall back to the bytes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Deepest nesting hashed by value (the service's bodies nest a handful of levels).
pub const MAX_DEPTH: usize = 48;

/// Most significant digits of a number hashed by value.
pub const MAX_DIGITS: usize = 40;

const NULL: u64 = 0x6e75_6c6c;
const TRUE: u64 = 0x7472_7565;
const FALSE: u64 = 0x6661_6c73;
const STRING: u64 = 0x7374_7269;
const NUMBER: u64 = 0x6e75_6d62;
const ZERO: u64 = 0x7a65_726f;
const ARRAY: u64 = 0x6172_7261;
const OBJECT: u64 = 0x6f62_6a65;

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// The high and low halves of a 128-bit product, folded.
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// Combines two hashes (order matters).
pub fn mix(a: u64, b: u64) -> u64 {
    fold(a ^ K0, b ^ K1)
}

/// A hash of `bytes` under `seed`: up to 64 bytes by folded multiplies of 16-byte blocks
/// (the scalars of an event body: ids, timestamps, names), longer ones by xxh3.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let n = bytes.len();
    if n > 64 {
        return xxh3_64_with_seed(bytes, seed);
    }
    let r8 = |i: usize| {
        bytes
            .get(i..i + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let r4 = |i: usize| {
        bytes
            .get(i..i + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
    };
    let mut seed = seed;
    let (a, b) = if n > 16 {
        let mut i = 0;
        while i + 16 < n {
            seed = fold(r8(i) ^ K1, r8(i + 8) ^ seed);
            i += 16;
        }
        (r8(n - 16), r8(n - 8))
    } else if n >= 8 {
        (r8(0), r8(n - 8))
    } else if n >= 4 {
        (r4(0), r4(n - 4))
    } else if n > 0 {
        let at = |i: usize| u64::from(bytes[i]);
        ((at(0) << 16) | (at(n / 2) << 8) | at(n - 1), 0)
    } else {
        (0, 0)
    };
    fold(a ^ K0 ^ seed, b ^ K1 ^ (n as u64).wrapping_mul(K2))
}

/// The value hash of `text`, or None when it is not one JSON value.
pub fn value_hash(text: &[u8]) -> Option<u64> {
    let mut p = Parser {
        s: text,
        i: 0,
        scratch: Vec::new(),
    };
    let h = p.value()?;
    p.ws();
    (p.i == text.len()).then_some(h)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Array,
    Object,
}

#[derive(Clone, Copy)]
struct Open {
    kind: Kind,
    /// Arrays: the running chain. Objects: the wrapping sum of member hashes.
    acc: u64,
    count: u64,
    /// Objects: the hash of the key whose value is being read.
    key: u64,
}

const CLOSED: Open = Open {
    kind: Kind::Array,
    acc: 0,
    count: 0,
    key: 0,
};

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Decoded text of a string with escapes (allocated only if one has any).
    scratch: Vec<u8>,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn literal(&mut self, word: &[u8], hash: u64) -> Option<u64> {
        let end = self.i.checked_add(word.len())?;
        (self.s.get(self.i..end)? == word).then(|| {
            self.i = end;
            hash
        })
    }

    /// One JSON value, containers walked on an explicit stack.
    fn value(&mut self) -> Option<u64> {
        let mut stack = [CLOSED; MAX_DEPTH];
        let mut depth = 0usize;
        loop {
            // Read a value start: a scalar gives a hash; a container opens a level.
            self.ws();
            let mut done = match self.peek()? {
                open @ (b'{' | b'[') => {
                    let kind = if open == b'{' {
                        Kind::Object
                    } else {
                        Kind::Array
                    };
                    self.i += 1;
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    stack[depth] = Open { kind, ..CLOSED };
                    depth += 1;
                    self.ws();
                    let close = if kind == Kind::Object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                        Some(close_hash(&stack[depth]))
                    } else {
                        if kind == Kind::Object {
                            stack[depth - 1].key = self.key()?;
                        }
                        None
                    }
                }
                b'"' => Some(self.string()?),
                b't' => Some(self.literal(b"true", TRUE)?),
                b'f' => Some(self.literal(b"false", FALSE)?),
                b'n' => Some(self.literal(b"null", NULL)?),
                b'-' | b'0'..=b'9' => Some(self.number()?),
                _ => return None,
            };
            // Fold finished values into their containers, closing levels as they end.
            while let Some(h) = done.take() {
                if depth == 0 {
                    return Some(h);
                }
                let top = &mut stack[depth - 1];
                top.count += 1;
                match top.kind {
                    Kind::Array => top.acc = mix(top.acc, h),
                    Kind::Object => top.acc = top.acc.wrapping_add(mix(top.key, h)),
                }
                self.ws();
                match (self.peek()?, top.kind) {
                    (b',', Kind::Array) => self.i += 1,
                    (b',', Kind::Object) => {
                        self.i += 1;
                        let key = self.key()?;
                        stack[depth - 1].key = key;
                    }
                    (b']', Kind::Array) | (b'}', Kind::Object) => {
                        self.i += 1;
                        depth -= 1;
                        done = Some(close_hash(&stack[depth]));
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A member's key and its colon.
    fn key(&mut self) -> Option<u64> {
        self.ws();
        if self.peek() != Some(b'"') {
            return None;
        }
        let h = self.string()?;
        self.ws();
        (self.peek() == Some(b':')).then(|| {
            self.i += 1;
            h
        })
    }

    /// A string, hashed as its decoded UTF-8 bytes.
    fn string(&mut self) -> Option<u64> {
        let start = self.i + 1;
        let rest = self.s.get(start..)?;
        let stop = special(rest)?;
        let run = &rest[..stop];
        if rest[stop] < 0x20 {
            return None;
        }
        if rest[stop] == b'"' {
            // No escapes: hashed where it lies.
            self.i = start + stop + 1;
            return Some(hash(run, STRING));
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(run);
        self.i = start + stop;
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(hash(&self.scratch, STRING));
                }
                b'\\' => {
                    self.i += 1;
                    self.escape()?;
                }
                b if b < 0x20 => return None,
                _ => {
                    let rest = &self.s[self.i..];
                    let stop = special(rest)?;
                    self.scratch.extend_from_slice(&rest[..stop]);
                    self.i += stop;
                }
            }
        }
    }

    /// One escape after its backslash, decoded onto the scratch text.
    fn escape(&mut self) -> Option<()> {
        let c = match self.peek()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                self.i += 1;
                let hi = self.hex4()?;
                let code = if (0xd800..0xdc00).contains(&hi) {
                    if self.s.get(self.i..self.i + 2)? != b"\\u" {
                        return None;
                    }
                    self.i += 2;
                    let lo = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                } else {
                    hi
                };
                let c = char::from_u32(code)?;
                let mut utf8 = [0u8; 4];
                self.scratch
                    .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                return Some(());
            }
            _ => return None,
        };
        self.i += 1;
        self.scratch.push(c as u8);
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i..self.i + 4)?;
        let mut n = 0u32;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }

    /// A number, hashed as sign, significant digits and decimal exponent: the value
    /// 0.DIGITS × 10^EXP with no leading or trailing zero digits.
    fn number(&mut self) -> Option<u64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let mut digits = [0u8; MAX_DIGITS];
        let mut len = 0usize;
        let mut significant = false;
        let mut zeros = 0usize; // zeros after the last non-zero digit, not yet written
        // Digits before the decimal point, counted from the first significant one
        // (negative when that comes after the point).
        let mut point: i64 = 0;
        let mut any = false;
        let mut in_fraction = false;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' => {
                    any = true;
                    if b == b'0' {
                        if significant {
                            zeros += 1;
                        } else if in_fraction {
                            point -= 1;
                        }
                    } else {
                        if len + zeros + 1 > MAX_DIGITS {
                            return None;
                        }
                        digits[len..len + zeros].fill(b'0');
                        len += zeros;
                        zeros = 0;
                        significant = true;
                        digits[len] = b;
                        len += 1;
                    }
                    if significant && !in_fraction {
                        point += 1;
                    }
                }
                b'.' if !in_fraction => in_fraction = true,
                _ => break,
            }
            self.i += 1;
        }
        if !any {
            return None;
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let minus = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let mut seen = false;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                seen = true;
                // Exponents beyond any real number saturate rather than overflow.
                exp = (exp * 10 + i64::from(d - b'0')).min(1 << 40);
                self.i += 1;
            }
            if !seen {
                return None;
            }
            if minus {
                exp = -exp;
            }
        }
        if !significant {
            return Some(ZERO);
        }
        let seed = mix(NUMBER ^ u64::from(negative), (point + exp) as u64);
        Some(hash(&digits[..len], seed))
    }
}

/// Where the first `"`, `\\` or control character of `text` is, eight bytes at a time.
fn special(text: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // A high bit for each zero byte; exact for the lowest one, which is all that is read.
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut chunks = text.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        let hits =
            zero(w ^ (LO * 0x22)) | zero(w ^ (LO * 0x5c)) | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|k| at + k)
}

fn close_hash(open: &Open) -> u64 {
    let tag = match open.kind {
        Kind::Array => ARRAY,
        Kind::Object => OBJECT,
    };
    mix(mix(tag, open.count), open.acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> u64 {
        value_hash(text.as_bytes()).unwrap_or_else(|| panic!("{text:?} hashes"))
    }

    #[test]
    fn serialisations_of_one_value_agree() {
        let forms = [
            r#"{"a":1,"b":[true,null,"x"],"c":{"d":-2.5}}"#,
            r#" { "c" : { "d" : -25e-1 } , "b" : [ true , null , "\u0078" ] , "a" : 1.0 } "#,
            "{\n  \"b\": [true, null, \"x\"],\n  \"a\": 10E-1,\n  \"c\": {\"d\": -0.25e1}\n}",
        ];
        for form in forms {
            assert_eq!(h(form), h(forms[0]), "{form}");
        }
    }

    #[test]
    fn numbers_hash_by_value() {
        for (a, b) in [
            ("1200", "1.2e3"),
            ("1200", "12.00E2"),
            ("0.001", "1e-3"),
            ("0", "-0.0e5"),
            (
                "123456789012345678901234567890",
                "1.2345678901234567890123456789e29",
            ),
        ] {
            assert_eq!(h(a), h(b), "{a} = {b}");
        }
        for (a, b) in [("1", "-1"), ("12", "21"), ("1", "10"), ("0.1", "1")] {
            assert_ne!(h(a), h(b), "{a} != {b}");
        }
    }

    #[test]
    fn strings_hash_by_their_characters() {
        assert_eq!(h(r#""é/""#), h(r#""\u00e9\/""#));
        assert_eq!(h(r#""😀""#), h(r#""\ud83d\ude00""#));
        let long = "y".repeat(200);
        let escaped = format!("{}\\u0079{}", "y".repeat(70), "y".repeat(129));
        assert_eq!(h(&format!("\"{long}\"")), h(&format!("\"{escaped}\"")));
        assert_ne!(h(r#""ab""#), h(r#""ba""#));
    }

    #[test]
    fn structure_matters() {
        assert_ne!(h("[1,2]"), h("[2,1]"));
        assert_ne!(h(r#"{"a":1,"b":2}"#), h(r#"{"a":2,"b":1}"#));
        assert_ne!(h("[]"), h("{}"));
        assert_ne!(h("[[]]"), h("[]"));
        assert_ne!(h(r#"{"a":{}}"#), h(r#"{"a":[]}"#));
        assert_ne!(h(r#""1""#), h("1"));
        assert_ne!(h("null"), h("false"));
        assert_ne!(h(r#"{"a":1}"#), h(r#"{"a":1,"a":1}"#));
    }

    #[test]
    fn text_that_is_not_one_value_has_no_hash() {
        for bad in [
            "",
            "{",
            "[1,]",
            r#"{"a"}"#,
            r#"{"a":1,}"#,
            "tru",
            "1e",
            "-",
            r#""\x""#,
            "1 2",
            r#""\ud800""#,
            "[1}",
            "\"a\nb\"",
        ] {
            assert_eq!(value_hash(bad.as_bytes()), None, "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(value_hash(deep.as_bytes()), None);
        let fits = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(value_hash(fits.as_bytes()).is_some());
    }

    #[test]
    fn agrees_with_serde_json_reserialisation() {
        let body = r#"{"eventBody":{"id":"c-1","participants":[{"purpose":"agent","userId":"u","wrapup":null,"score":97.50}],"startTime":"2024-05-02T09:15:01.120Z"},"n":-0.000120}"#;
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(h(body), h(&value.to_string()));
        assert_eq!(h(body), h(&serde_json::to_string_pretty(&value).unwrap()));
    }

    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn compact_and_pretty_forms_agree(value in json()) {
            let compact = value.to_string();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert_eq!(value_hash(compact.as_bytes()), value_hash(pretty.as_bytes()));
            proptest::prop_assert!(value_hash(compact.as_bytes()).is_some());
        }

        #[test]
        fn the_word_scan_finds_what_a_byte_scan_finds(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(special(&bytes), naive);
        }

        #[test]
        fn any_bytes_hash_or_refuse_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = value_hash(&bytes);
        }
    }
}
