//! Other serialisations of one JSON value, for `frames = "per-channel"`: what a service
//! that serialises an event once per channel might write. Every style is the same value
//! (same members, same numbers, same characters), only the bytes differ.

use std::fmt::Write;

use serde_json::Value;

/// How many styles there are; style 0 is the body exactly as published.
pub const STYLES: u64 = 4;

/// `value` written in style `style % STYLES` (style 0 is `original` itself).
pub fn restyle(original: &str, value: &Value, style: u64) -> String {
    let style = style % STYLES;
    if style == 0 {
        return original.to_owned();
    }
    let mut out = String::with_capacity(original.len() + original.len() / 2);
    write(&mut out, value, style, 0);
    out
}

fn write(out: &mut String, value: &Value, style: u64, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(out, &n.to_string(), style),
        Value::String(s) => string(out, s, style),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    separator(out, style, depth + 1);
                } else {
                    indent(out, style, depth + 1);
                }
                write(out, item, style, depth + 1);
            }
            if !items.is_empty() {
                indent(out, style, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            // Style 1 writes members in reverse order, the others in sorted order.
            let members: Vec<(&String, &Value)> = match style {
                1 => map.iter().rev().collect(),
                _ => map.iter().collect(),
            };
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    separator(out, style, depth + 1);
                } else {
                    indent(out, style, depth + 1);
                }
                string(out, key, style);
                out.push_str(if style == 1 { ":" } else { ": " });
                write(out, item, style, depth + 1);
            }
            if !members.is_empty() {
                indent(out, style, depth);
            }
            out.push('}');
        }
    }
}

fn separator(out: &mut String, style: u64, depth: usize) {
    match style {
        2 => {
            out.push(',');
            indent(out, style, depth);
        }
        3 => out.push_str(", "),
        _ => out.push(','),
    }
}

fn indent(out: &mut String, style: u64, depth: usize) {
    if style == 2 {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
}

/// Style 1 escapes every non-ASCII character and `/`; the others write them as they are.
fn string(out: &mut String, s: &str, style: u64) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '/' if style == 1 => out.push_str("\\/"),
            c if (c as u32) < 0x20 || (style == 1 && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Style 2 writes numbers in exponent form (`1200` as `1.2E3`), style 3 integers with a
/// fraction (`1200` as `1200.0`); style 1 as they are.
fn number(out: &mut String, text: &str, style: u64) {
    let plain = !text.contains(['.', 'e', 'E']);
    match style {
        2 => {
            let (sign, digits) = text
                .strip_prefix('-')
                .map_or(("", text), |rest| ("-", rest));
            let Some((int, rest)) = split_number(digits) else {
                out.push_str(text);
                return;
            };
            let all: String = int.chars().chain(rest.chars()).collect();
            let lead = all.len() - all.trim_start_matches('0').len();
            let significant = all[lead..].trim_end_matches('0');
            if significant.is_empty() {
                out.push_str(text);
                return;
            }
            let exp = int.len() as i64 - lead as i64 - 1 + exponent_of(digits);
            let (first, more) = significant.split_at(1);
            out.push_str(sign);
            out.push_str(first);
            if !more.is_empty() {
                out.push('.');
                out.push_str(more);
            }
            let _ = write!(out, "E{exp}");
        }
        3 if plain => {
            out.push_str(text);
            out.push_str(".0");
        }
        _ => out.push_str(text),
    }
}

/// The integer and fraction digits of an unsigned number's mantissa.
fn split_number(digits: &str) -> Option<(&str, &str)> {
    let mantissa = digits.split(['e', 'E']).next()?;
    Some(match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    })
}

fn exponent_of(digits: &str) -> i64 {
    digits
        .split_once(['e', 'E'])
        .and_then(|(_, e)| e.trim_start_matches('+').parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdline_proto::EventId;

    const BODY: &str = r#"{"id":"c/1","n":1200,"f":-0.0125,"name":"Zoë","list":[1,{"b":true,"a":null}],"empty":{},"none":[]}"#;

    #[test]
    fn every_style_is_the_same_value_in_other_bytes() {
        let value: Value = serde_json::from_str(BODY).unwrap();
        let id = EventId::of("t", BODY.as_bytes());
        let mut seen = std::collections::HashSet::new();
        for style in 0..STYLES {
            let text = restyle(BODY, &value, style);
            let back: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(
                numbers_as_f64(back),
                numbers_as_f64(value.clone()),
                "style {style}: {text}"
            );
            assert_eq!(
                EventId::of("t", text.as_bytes()),
                id,
                "style {style}: {text}"
            );
            assert!(seen.insert(text), "style {style} has its own bytes");
        }
    }

    /// The value with every number as a float (`1.2E3` reads back as a float, `1200` not).
    fn numbers_as_f64(value: Value) -> Value {
        match value {
            Value::Number(n) => Value::from(n.as_f64().unwrap()),
            Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, numbers_as_f64(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    #[test]
    fn style_two_writes_exponents() {
        let mut out = String::new();
        number(&mut out, "1200", 2);
        assert_eq!(out, "1.2E3");
        out.clear();
        number(&mut out, "-0.0125", 2);
        assert_eq!(out, "-1.25E-2");
        out.clear();
        number(&mut out, "0", 2);
        assert_eq!(out, "0");
    }
}
