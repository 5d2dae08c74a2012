//! The one rule of the Prometheus/OpenMetrics text format that holdline applies itself:
//! label values escaped (the `prometheus-client` encoder writes them as given, and a
//! channel id or a sink's path is not ours to trust).

use std::borrow::Cow;

/// `v` with `\`, `"` and newlines escaped for a label value.
pub fn escape(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
        )
    } else {
        Cow::Borrowed(v)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_backslashes_and_newlines_are_escaped() {
        assert_eq!(super::escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(super::escape("x\ny"), r"x\ny");
        assert!(matches!(
            super::escape("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
