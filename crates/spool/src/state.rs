//! The small file beside the segments: whether a run is going, the highest sequence number
//! given out, and each sink's cursor. Replaced whole (written aside, then renamed), and
//! checked by a checksum on its last line.
//!
//! ```text
//! holdline-spool 1
//! running 1
//! last 1234
//! cursor 1200 stdout
//! check 9f86d081884c7d65
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub running: bool,
    pub last: u64,
    pub cursors: BTreeMap<String, u64>,
}

const FIRST_LINE: &str = "holdline-spool 1";

impl State {
    fn render(&self) -> String {
        let mut s = format!(
            "{FIRST_LINE}\nrunning {}\nlast {}\n",
            u8::from(self.running),
            self.last
        );
        for (name, cursor) in &self.cursors {
            s.push_str(&format!("cursor {cursor} {name}\n"));
        }
        let sum = xxhash_rust::xxh3::xxh3_64(s.as_bytes());
        s.push_str(&format!("check {sum:016x}\n"));
        s
    }

    fn parse(text: &str) -> Option<State> {
        let (body, check) = text.strip_suffix('\n')?.rsplit_once('\n')?;
        let body = format!("{body}\n");
        let sum = u64::from_str_radix(check.strip_prefix("check ")?, 16).ok()?;
        if xxhash_rust::xxh3::xxh3_64(body.as_bytes()) != sum {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != FIRST_LINE {
            return None;
        }
        let mut state = State::default();
        for line in lines {
            let (key, rest) = line.split_once(' ')?;
            match key {
                "running" => state.running = rest == "1",
                "last" => state.last = rest.parse().ok()?,
                "cursor" => {
                    let (cursor, name) = rest.split_once(' ')?;
                    state.cursors.insert(name.to_owned(), cursor.parse().ok()?);
                }
                _ => return None,
            }
        }
        Some(state)
    }

    /// Reads the state in `dir`: `Ok(None)` when there is none yet, `Err(())` when the file
    /// is there but damaged.
    pub fn load(dir: &Path) -> std::io::Result<Result<Option<State>, ()>> {
        match std::fs::read(dir.join("state")) {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                .ok()
                .and_then(State::parse)
                .map(Some)
                .ok_or(())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ok(None)),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state in `dir`; with `sync`, durably (the new file and the rename).
    pub fn save(&self, dir: &Path, sync: bool) -> std::io::Result<()> {
        let aside = dir.join("state.new");
        let mut f = std::fs::File::create(&aside)?;
        f.write_all(self.render().as_bytes())?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        std::fs::rename(&aside, dir.join("state"))?;
        if sync {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Makes the directory's entries (a created, renamed or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_damage_is_recognised() {
        let mut s = State {
            running: true,
            last: 42,
            ..State::default()
        };
        s.cursors.insert("stdout".into(), 40);
        s.cursors.insert("file /var/log/x y.jsonl".into(), 7);
        let text = s.render();
        assert_eq!(State::parse(&text), Some(s));
        let damaged = text.replacen("last 42", "last 43", 1);
        assert_eq!(State::parse(&damaged), None);
        assert_eq!(State::parse(&text[..text.len() - 3]), None);
        assert_eq!(State::parse(""), None);
    }
}
