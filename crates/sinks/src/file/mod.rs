//! The file sink: JSON lines appended to a file, fsynced before a batch counts as
//! delivered, rotated by size and/or age. A rotated file is renamed with the time it was
//! closed (`events-20261127T101500Z.jsonl`) and a new one is started; a record is never
//! split across files.

mod config;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::{BlockingSink, SinkError};

pub use config::*;

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
