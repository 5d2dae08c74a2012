//! A hash of a JSON text's *value*: the same for every serialisation of the same value.
//!
//! Object members hash in any order, whitespace is skipped, strings hash as their decoded
//! characters (`"\u00e9"`, `"é"` and `"\/"` versus `"/"` agree) and numbers as their
//! decimal value (`1200`, `1.2e3`, `12.00E2` agree; integers and floats of the same value
//! too). Arrays keep their order. One pass, no allocation: scalars are hashed in fixed
//! chunks of their canonical bytes, containers on a fixed-depth stack.
//!
//! Text that is not JSON, or nests deeper than [`MAX_DEPTH`], has no value hash; callers
//! fall back to hashing the bytes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Deepest nesting hashed by value (the service's bodies nest a handful of levels).
pub const MAX_DEPTH: usize = 64;

/// Canonical bytes are hashed in chunks of this size, so that a scalar's hash does not
/// depend on how its text was split by escapes.
const CHUNK: usize = 64;

const NULL: u64 = 0x6e75_6c6c;
const TRUE: u64 = 0x7472_7565;
const FALSE: u64 = 0x6661_6c73;
const STRING: u64 = 0x7374_7269;
const NUMBER: u64 = 0x6e75_6d62;
const ZERO: u64 = 0x7a65_726f;
const ARRAY: u64 = 0x6172_7261;
const OBJECT: u64 = 0x6f62_6a65;

/// Combines two hashes (order matters).
pub fn mix(a: u64, b: u64) -> u64 {
    xxh3_64_with_seed(&b.to_le_bytes(), a)
}

/// The value hash of `text`, or None when it is not one JSON value.
pub fn value_hash(text: &[u8]) -> Option<u64> {
    let mut p = Parser { s: text, i: 0 };
    let h = p.value()?;
    p.ws();
    (p.i == text.len()).then_some(h)
}

#[derive(Clone, Copy)]
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

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// Feeds canonical bytes in fixed chunks.
struct Chunks {
    h: u64,
    buf: [u8; CHUNK],
    len: usize,
}

impl Chunks {
    fn new(seed: u64) -> Self {
        Chunks {
            h: seed,
            buf: [0; CHUNK],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
        if self.len == CHUNK {
            self.h = xxh3_64_with_seed(&self.buf, self.h);
            self.len = 0;
        }
    }

    fn extend(&mut self, mut bytes: &[u8]) {
        // Whole chunks straight from the input when nothing is pending.
        while self.len == 0 && bytes.len() >= CHUNK {
            self.h = xxh3_64_with_seed(&bytes[..CHUNK], self.h);
            bytes = &bytes[CHUNK..];
        }
        for &b in bytes {
            self.push(b);
        }
    }

    fn finish(self) -> u64 {
        xxh3_64_with_seed(&self.buf[..self.len], self.h)
    }
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
        let mut stack = [Open {
            kind: Kind::Array,
            acc: 0,
            count: 0,
            key: 0,
        }; MAX_DEPTH];
        let mut depth = 0usize;
        loop {
            // Read a value start: a scalar gives a hash; a container opens a level.
            self.ws();
            let mut done = match self.peek()? {
                b'{' | b'[' => {
                    let kind = if self.peek() == Some(b'{') {
                        Kind::Object
                    } else {
                        Kind::Array
                    };
                    self.i += 1;
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    stack[depth] = Open {
                        kind,
                        acc: 0,
                        count: 0,
                        key: 0,
                    };
                    depth += 1;
                    self.ws();
                    let close = if matches!(kind, Kind::Object) {
                        b'}'
                    } else {
                        b']'
                    };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                        Some(close_hash(&stack[depth]))
                    } else {
                        if matches!(kind, Kind::Object) {
                            stack[depth - 1].key = self.key()?;
                        }
                        None
                    }
                }
                b'"' => Some(self.string(STRING)?),
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
                        top.key = self.key()?;
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
        let h = self.string(STRING)?;
        self.ws();
        (self.peek() == Some(b':')).then(|| {
            self.i += 1;
            h
        })
    }

    /// A string, hashed as its decoded UTF-8 bytes.
    fn string(&mut self, seed: u64) -> Option<u64> {
        self.i += 1;
        let mut out = Chunks::new(seed);
        loop {
            let start = self.i;
            let rest = self.s.get(start..)?;
            let run = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            out.extend(&rest[..run]);
            self.i = start + run;
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(out.finish());
                }
                b'\\' => {
                    self.i += 1;
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
                            out.extend(c.encode_utf8(&mut utf8).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    self.i += 1;
                    out.push(c as u8);
                }
                _ => return None,
            }
        }
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
        let mut digits = Chunks::new(NUMBER);
        let mut significant = false;
        let mut zeros = 0u64; // zeros seen after the last non-zero digit, not yet fed
        let mut point: i64 = 0; // digits before the decimal point, counted from the first
        // significant one (negative when it comes after the point)
        let mut any = false;
        let mut in_fraction = false;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' => {
                    any = true;
                    if b == b'0' {
                        if significant {
                            zeros += 1;
                        }
                        if !significant && in_fraction {
                            point -= 1;
                        }
                    } else {
                        for _ in 0..zeros {
                            digits.push(b'0');
                        }
                        zeros = 0;
                        significant = true;
                        digits.push(b);
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
        let seed = mix(u64::from(negative), (point + exp) as u64);
        Some(mix(seed, digits.finish()))
    }
}

fn close_hash(open: &Open) -> u64 {
    match open.kind {
        Kind::Array => mix(mix(ARRAY, open.count), open.acc),
        Kind::Object => mix(mix(OBJECT, open.count), open.acc),
    }
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
        fn any_bytes_hash_or_refuse_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = value_hash(&bytes);
        }
    }
}
