//! The raw floor: a minimal Rust WebSocket client that reads frames and discards them
//! unparsed. Its rate is what this machine can move through one socket, the ceiling any
//! client's rate is compared with.

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// Reads frames from `uri`; after `expect` text frames prints `frames N bytes B` and keeps
/// reading (so its process can still be measured) until the socket ends.
pub async fn run(uri: &str, expect: usize) -> Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .with_context(|| format!("connecting to {uri}"))?;
    let (mut frames, mut bytes) = (0usize, 0usize);
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            frames += 1;
            bytes += text.len();
            if frames == expect {
                println!("frames {frames} bytes {bytes}");
            }
        }
    }
    if frames < expect {
        bail!("the socket ended after {frames} of {expect} frames");
    }
    Ok(())
}

/// Parses the floor's report line into (frames, bytes).
pub fn parse_report(line: &str) -> Option<(usize, usize)> {
    let mut words = line.split_whitespace();
    match (words.next()?, words.next()?, words.next()?, words.next()?) {
        ("frames", frames, "bytes", bytes) => Some((frames.parse().ok()?, bytes.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_round_trips() {
        assert_eq!(parse_report("frames 10 bytes 2048\n"), Some((10, 2048)));
        assert_eq!(parse_report("frames ten bytes 2048"), None);
        assert_eq!(parse_report(""), None);
    }
}
