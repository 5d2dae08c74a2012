//! The file sink: JSON lines appended to a file, fsynced before a batch counts as
//! delivered, rotated by size and/or age. A rotated file is renamed with the time it was
//! closed (`events-20261127T101500Z.jsonl`) and a new one is started; a record is never
//! split across files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::{BlockingSink, SinkError, duration_option};

/// `file:///path/events.jsonl?max_bytes=N&rotate=1h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
    /// Rotate before a file would grow past this.
    pub max_bytes: Option<u64>,
    /// Rotate files older than this.
    pub rotate_every: Option<Duration>,
}

impl FileConfig {
    pub(crate) fn from_parts(path: &str, params: &[(String, String)]) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "file sink path {path:?} must be absolute: file:///var/log/holdline/events.jsonl"
            ));
        }
        let mut config = FileConfig {
            path: PathBuf::from(path),
            max_bytes: None,
            rotate_every: None,
        };
        for (k, v) in params {
            match k.as_str() {
                "max_bytes" => {
                    let n: u64 = v.parse().map_err(|_| {
                        format!("sink option max_bytes={v} is not a number of bytes")
                    })?;
                    config.max_bytes = Some(n.max(1));
                }
                "rotate" => config.rotate_every = Some(duration_option(k, v)?),
                other => {
                    return Err(format!(
                        "unknown file sink option {other:?}; the options are max_bytes and rotate"
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The file sink.
pub struct FileSink {
    config: FileConfig,
    name: String,
    file: File,
    written: u64,
    opened: Instant,
}

impl FileSink {
    /// Opens (appending to) the configured file, creating its folder.
    pub fn open(config: FileConfig) -> Result<FileSink, SinkError> {
        let name = format!("file:{}", config.path.display());
        let fail = |detail: String| SinkError::Failed {
            sink: name.clone(),
            detail,
        };
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = open_append(&config.path).map_err(|e| fail(e.to_string()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileSink {
            config,
            name,
            file,
            written,
            opened: Instant::now(),
        })
    }

    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Failed {
            sink: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn due(&self, next: u64) -> bool {
        let by_size = self
            .config
            .max_bytes
            .is_some_and(|max| self.written > 0 && self.written + next > max);
        let by_age = self
            .config
            .rotate_every
            .is_some_and(|every| self.written > 0 && self.opened.elapsed() >= every);
        by_size || by_age
    }

    /// Closes the current file under a time-stamped name and starts a new one.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file.sync_all().map_err(|e| self.fail(e))?;
        let target = rotated_name(&self.config.path, SystemTime::now());
        std::fs::rename(&self.config.path, &target)
            .map_err(|e| self.fail(format!("cannot rotate to {}: {e}", target.display())))?;
        self.file = open_append(&self.config.path).map_err(|e| self.fail(e))?;
        self.written = 0;
        self.opened = Instant::now();
        Ok(())
    }
}

impl BlockingSink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        for record in records {
            if self.due(record.len() as u64) {
                self.rotate()?;
            }
            self.file.write_all(record).map_err(|e| self.fail(e))?;
            self.written += record.len() as u64;
        }
        // Delivered means on disk.
        self.file.sync_data().map_err(|e| self.fail(e))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `events.jsonl` closed at T → `events-YYYYMMDDTHHMMSS.ffffffZ.jsonl` beside it (unique
/// unless two rotations happen in the same microsecond).
fn rotated_name(path: &Path, at: SystemTime) -> PathBuf {
    let stamp = time::OffsetDateTime::from(at);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.microsecond()
    );
    let stem = path
        .file_stem()
        .map_or("events".into(), |s| s.to_string_lossy());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{stamp}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{stamp}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Vec<u8> {
        format!("{{\"kind\":\"event\",\"n\":{i:04}}}\n").into_bytes()
    }

    fn all_lines(dir: &Path) -> (usize, Vec<String>) {
        let mut files = 0;
        let mut lines = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "a record was split"
            );
            lines.extend(text.lines().map(str::to_owned));
        }
        (files, lines)
    }

    #[test]
    fn records_are_appended_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            FileConfig::from_parts(dir.path().join("out/events.jsonl").to_str().unwrap(), &[])
                .unwrap();
        let batch: Vec<Vec<u8>> = (0..5).map(record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        FileSink::open(config.clone())
            .unwrap()
            .deliver(&refs)
            .unwrap();
        FileSink::open(config).unwrap().deliver(&refs[..2]).unwrap();
        let (files, lines) = all_lines(&dir.path().join("out"));
        assert_eq!(files, 1);
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn files_rotate_by_size_without_splitting_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let one = record(0).len() as u64;
        let mut sink = FileSink::open(FileConfig {
            path: path.clone(),
            max_bytes: Some(one * 3),
            rotate_every: None,
        })
        .unwrap();
        let batch: Vec<Vec<u8>> = (0..10).map(record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        sink.deliver(&refs).unwrap();
        let (files, lines) = all_lines(dir.path());
        assert_eq!(files, 4, "3 + 3 + 3 + 1 records");
        assert_eq!(lines.len(), 10);
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(sorted, lines, "rotated files sort in delivery order");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let len = entry.unwrap().metadata().unwrap().len();
            assert!(len <= one * 3, "a file grew past max_bytes: {len}");
        }
    }

    #[test]
    fn files_rotate_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(FileConfig {
            path: dir.path().join("events.jsonl"),
            max_bytes: None,
            rotate_every: Some(Duration::ZERO),
        })
        .unwrap();
        let a = record(1);
        let b = record(2);
        sink.deliver(&[&a]).unwrap();
        sink.deliver(&[&b]).unwrap();
        let (files, lines) = all_lines(dir.path());
        assert_eq!(files, 2);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = FileSink::open(FileConfig {
            path: blocker.join("events.jsonl"),
            max_bytes: None,
            rotate_every: None,
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("cannot create"), "{err}");
    }

    #[test]
    fn rotated_names_carry_the_time_and_keep_the_extension() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        let name = rotated_name(Path::new("/x/events.jsonl"), at);
        assert_eq!(
            name,
            PathBuf::from("/x/events-20261118T110640.123456Z.jsonl")
        );
    }
}
