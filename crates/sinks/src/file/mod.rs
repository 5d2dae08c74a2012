//! The file sink: JSON lines appended to a file, fsynced before a batch counts as
//! delivered, rotated by size and/or age. A rotated file is renamed with the time it was
//! closed (`events-20261127T101500Z.jsonl`) and a new one is started; a record is never
//! split across files.
//!
//! Fenced (`holdline deliver --cluster`), every batch first takes an exclusive lock on
//! `<file>.<lease>.fence`, which holds the largest token written so far: a writer below it is
//! refused, any other writes its token there and appends while it holds the lock. Writers
//! must share one file system whose locks work (local disks do; some network file
//! systems do not).

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
    fence: Option<crate::Fence>,
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
            fence: None,
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

    fn fence(&mut self, fence: &crate::Fence) {
        self.fence = Some(fence.clone());
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        // Held until the batch is on disk.
        let _lock = match self.fence.clone() {
            Some(fence) => Some(self.pass_fence(&fence)?),
            None => None,
        };
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

impl FileSink {
    /// Locks the fence file and checks `token` against it, recording it when larger.
    /// The lock is released when the returned file is dropped.
    fn pass_fence(&mut self, fence: &crate::Fence) -> Result<File, SinkError> {
        use std::io::Read;
        use std::os::unix::fs::FileExt;
        let token = fence.token;
        let path = fence_path(&self.config.path, &fence.key);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| self.fail(format!("cannot open {}: {e}", path.display())))?;
        file.lock()
            .map_err(|e| self.fail(format!("cannot lock {}: {e}", path.display())))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| self.fail(format!("cannot read {}: {e}", path.display())))?;
        let seen: u64 = match text.trim() {
            "" => 0,
            t => t.parse().map_err(|_| {
                self.fail(format!(
                    "{} holds {t:?}, not a fencing token: remove it if no deliverer writes here",
                    path.display()
                ))
            })?,
        };
        if seen > token {
            return Err(SinkError::Fenced {
                sink: self.name.clone(),
                detail: format!(
                    "{} holds token {seen}, this deliverer's is {token}",
                    path.display()
                ),
            });
        }
        if seen < token {
            // One fixed-width write over the old token: never a moment without one.
            let write = (|| {
                file.write_all_at(format!("{token:020}\n").as_bytes(), 0)?;
                file.set_len(21)?;
                file.sync_data()
            })();
            write.map_err(|e| self.fail(format!("cannot write {}: {e}", path.display())))?;
        }
        // A writer that took the lock after a rotation finds the new file by its name.
        self.reopen_if_rotated()?;
        Ok(file)
    }

    /// Another writer may have rotated the file: append to the one under the path now.
    fn reopen_if_rotated(&mut self) -> Result<(), SinkError> {
        use std::os::unix::fs::MetadataExt;
        let current = std::fs::metadata(&self.config.path).ok();
        let mine = self.file.metadata().map_err(|e| self.fail(e))?;
        if current.is_none_or(|c| c.ino() != mine.ino() || c.dev() != mine.dev()) {
            self.file = open_append(&self.config.path).map_err(|e| self.fail(e))?;
            self.written = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(())
    }
}

/// `events.jsonl` and lease `deliver.x` → `events.jsonl.deliver.x.fence` (each delivery
/// its own: tokens of two leases do not compare).
pub fn fence_path(path: &Path, lease: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{lease}.fence"));
    PathBuf::from(name)
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
