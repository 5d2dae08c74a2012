//! The durable spool: an on-disk log between receiving events and delivering them, so an
//! event acknowledged by the spool reaches every sink at least once, across sink outages
//! and restarts (including `kill -9`).
//!
//! One redb file holds two tables: `events` (sequence number → record bytes, exactly as
//! written to a sink) and `cursors` (sink name → last sequence number that sink confirmed).
//!
//! Invariants:
//! 1. [`Spool::append`] returns only after the write transaction holding the records has
//!    committed with the configured [`Durability`]; with [`Durability::Immediate`] (the
//!    default) that includes an fsync, so a record the caller was told about survives a
//!    crash of the process or the machine.
//! 2. Sequence numbers are dense and increase by one per record, across restarts.
//! 3. A sink's cursor only moves forward, and only through [`Spool::ack`], which a sink
//!    calls after its destination confirmed every record up to it. Cursor and records live
//!    in the same database and change in one transaction, so a crash leaves the old cursor
//!    or the new one, never a cursor past an undelivered record.
//! 4. After a restart every record after a sink's cursor is delivered again: delivery is
//!    at least once, and a duplicate is byte-for-byte the same record (same event id).
//! 5. A record is removed only once every registered sink's cursor has passed it, or by
//!    [`Spool::drop_oldest`], which the caller uses only after back-pressure failed and
//!    which reports what it dropped so the caller can write a gap record: never silent loss.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// `last`: the highest sequence number ever given out (records may be gone);
/// `received`: when the newest spooled event was received (unix microseconds);
/// `running`: 1 from [`Spool::begin_run`] until [`Spool::end_run`];
/// `bytes`: the bytes of the records held.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync per commit: survives a machine crash (the default).
    #[default]
    Immediate,
    /// No fsync: survives a process crash, not necessarily a power loss; much faster.
    Eventual,
}

/// What went wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the spool at {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("spool storage failed: {0}")]
    Storage(String),
    #[error("sink {0:?} is not registered with the spool")]
    UnknownSink(String),
}

fn storage(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

/// A record read back for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    pub record: Vec<u8>,
}

/// What [`Spool::drop_oldest`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub first: u64,
    pub last: u64,
    pub records: Vec<Vec<u8>>,
}

/// The spool: open one per directory.
pub struct Spool {
    db: Database,
    durability: Durability,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from any crash.
    pub fn open(dir: &Path, durability: Durability) -> Result<Spool, SpoolError> {
        let open_err = |detail: String| SpoolError::Open {
            path: dir.to_owned(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(dir.join("spool.redb")).map_err(|e| open_err(e.to_string()))?;
        let spool = Spool { db, durability };
        // Make sure both tables exist so readers never see "no such table".
        let txn = spool.write()?;
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(CURSORS).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(spool)
    }

    fn write(&self) -> Result<redb::WriteTransaction, SpoolError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        let durability = match self.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Eventual => redb::Durability::None,
        };
        txn.set_durability(durability).map_err(storage)?;
        Ok(txn)
    }

    /// Registers `sink` (its cursor starts at the current end of the log, so a new sink
    /// does not replay history); a known sink keeps its cursor.
    pub fn register(&self, sink: &str) -> Result<u64, SpoolError> {
        let txn = self.write()?;
        let cursor = {
            let mut cursors = txn.open_table(CURSORS).map_err(storage)?;
            let existing = cursors.get(sink).map_err(storage)?.map(|v| v.value());
            match existing {
                Some(c) => c,
                None => {
                    let meta = txn.open_table(META).map_err(storage)?;
                    let end = last_given(&meta)?;
                    cursors.insert(sink, end).map_err(storage)?;
                    end
                }
            }
        };
        txn.commit().map_err(storage)?;
        Ok(cursor)
    }

    /// Starts a run. Returns when the newest event of the previous run was received
    /// (unix microseconds) if that run did not end cleanly: events from then until this
    /// run receives again were missed, and the caller must say so with a gap.
    pub fn begin_run(&self) -> Result<Option<u64>, SpoolError> {
        let txn = self.write()?;
        let unclean = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let running = meta.get("running").map_err(storage)?.map(|v| v.value()) == Some(1);
            let received = meta.get("received").map_err(storage)?.map(|v| v.value());
            meta.insert("running", 1).map_err(storage)?;
            if running { received } else { None }
        };
        txn.commit().map_err(storage)?;
        Ok(unclean)
    }

    /// Ends a run cleanly (every event received was spooled).
    pub fn end_run(&self) -> Result<(), SpoolError> {
        let txn = self.write()?;
        txn.open_table(META)
            .map_err(storage)?
            .insert("running", 0)
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(())
    }

    /// [`Spool::append`], also noting when the newest event in `records` was received.
    pub fn append_received<R: AsRef<[u8]>>(
        &self,
        records: &[R],
        received: Option<u64>,
    ) -> Result<u64, SpoolError> {
        self.append_inner(records, received)
    }

    /// Appends `records` in one transaction (group commit) and returns the sequence number
    /// of the last one; returns once the commit is durable.
    pub fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<u64, SpoolError> {
        self.append_inner(records, None)
    }

    fn append_inner<R: AsRef<[u8]>>(
        &self,
        records: &[R],
        received: Option<u64>,
    ) -> Result<u64, SpoolError> {
        let txn = self.write()?;
        let last = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let mut events = txn.open_table(EVENTS).map_err(storage)?;
            let mut seq = last_given(&meta)?;
            let mut added = 0u64;
            for record in records {
                seq += 1;
                added += record.as_ref().len() as u64;
                events.insert(seq, record.as_ref()).map_err(storage)?;
            }
            meta.insert("last", seq).map_err(storage)?;
            let held = meta_value(&meta, "bytes")?;
            meta.insert("bytes", held + added).map_err(storage)?;
            if let Some(at) = received {
                meta.insert("received", at).map_err(storage)?;
            }
            seq
        };
        txn.commit().map_err(storage)?;
        Ok(last)
    }

    /// Up to `max` records after `sink`'s cursor, oldest first.
    pub fn pending(&self, sink: &str, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let cursors = txn.open_table(CURSORS).map_err(storage)?;
        let cursor = cursor_of(&cursors, sink)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in events.range(cursor + 1..).map_err(storage)?.take(max) {
            let (seq, record) = entry.map_err(storage)?;
            out.push(Spooled {
                seq: seq.value(),
                record: record.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// `sink`'s destination confirmed every record up to `seq`: moves its cursor (never
    /// back) and removes the records every sink has passed, in one transaction.
    pub fn ack(&self, sink: &str, seq: u64) -> Result<(), SpoolError> {
        let txn = self.write()?;
        {
            let mut cursors = txn.open_table(CURSORS).map_err(storage)?;
            let current = cursor_of(&cursors, sink)?;
            if seq > current {
                cursors.insert(sink, seq).map_err(storage)?;
            }
            let mut lowest = u64::MAX;
            for entry in cursors.iter().map_err(storage)? {
                let (_, c) = entry.map_err(storage)?;
                lowest = lowest.min(c.value());
            }
            let mut events = txn.open_table(EVENTS).map_err(storage)?;
            let mut removed = 0u64;
            events
                .retain_in(..=lowest, |_, v| {
                    removed += v.len() as u64;
                    false
                })
                .map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let held = meta_value(&meta, "bytes")?;
            meta.insert("bytes", held.saturating_sub(removed))
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }

    /// Bytes of the records held.
    pub fn held_bytes(&self) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        meta_value(&meta, "bytes")
    }

    /// Records waiting for `sink`.
    pub fn depth(&self, sink: &str) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let cursors = txn.open_table(CURSORS).map_err(storage)?;
        let cursor = cursor_of(&cursors, sink)?;
        let meta = txn.open_table(META).map_err(storage)?;
        Ok(last_given(&meta)?.saturating_sub(cursor))
    }

    /// Records held (delivered to some sinks but not all, or to none).
    pub fn len(&self) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        events.len().map_err(storage)
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    /// Removes the `count` oldest undelivered records and moves every cursor past them.
    /// Only for when back-pressure has failed: the caller must report what was dropped.
    pub fn drop_oldest(&self, count: usize) -> Result<Option<Dropped>, SpoolError> {
        let txn = self.write()?;
        let dropped = {
            let mut events = txn.open_table(EVENTS).map_err(storage)?;
            let mut cursors = txn.open_table(CURSORS).map_err(storage)?;
            let mut lowest = u64::MAX;
            for entry in cursors.iter().map_err(storage)? {
                let (_, c) = entry.map_err(storage)?;
                lowest = lowest.min(c.value());
            }
            let mut records = Vec::new();
            let mut seqs = Vec::new();
            for entry in events
                .range(lowest.saturating_add(1)..)
                .map_err(storage)?
                .take(count)
            {
                let (seq, record) = entry.map_err(storage)?;
                seqs.push(seq.value());
                records.push(record.value().to_vec());
            }
            match (seqs.first().copied(), seqs.last().copied()) {
                (Some(first), Some(last)) => {
                    let names: Vec<String> = cursors
                        .iter()
                        .map_err(storage)?
                        .filter_map(|e| e.ok())
                        .filter(|(_, c)| c.value() < last)
                        .map(|(k, _)| k.value().to_owned())
                        .collect();
                    for name in names {
                        cursors.insert(name.as_str(), last).map_err(storage)?;
                    }
                    let removed: u64 = records.iter().map(|r| r.len() as u64).sum();
                    events
                        .retain_in(first..=last, |_, _| false)
                        .map_err(storage)?;
                    let mut meta = txn.open_table(META).map_err(storage)?;
                    let held = meta_value(&meta, "bytes")?;
                    meta.insert("bytes", held.saturating_sub(removed))
                        .map_err(storage)?;
                    Some(Dropped {
                        first,
                        last,
                        records,
                    })
                }
                _ => None,
            }
        };
        txn.commit().map_err(storage)?;
        Ok(dropped)
    }
}

/// `sink`'s cursor: the sequence number of the last record it acknowledged.
fn cursor_of(
    cursors: &impl ReadableTable<&'static str, u64>,
    sink: &str,
) -> Result<u64, SpoolError> {
    cursors
        .get(sink)
        .map_err(storage)?
        .map(|v| v.value())
        .ok_or_else(|| SpoolError::UnknownSink(sink.to_owned()))
}

fn last_given(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, SpoolError> {
    meta_value(meta, "last")
}

fn meta_value(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, SpoolError> {
    Ok(meta.get(key).map_err(storage)?.map_or(0, |v| v.value()))
}

#[cfg(test)]
mod tests;
