//! The durable spool: an on-disk log between receiving events and delivering them, so an
//! event acknowledged by the spool reaches every sink at least once, across sink outages
//! and restarts (including `kill -9` and a machine crash).
//!
//! The spool is a directory of segment files (`<first sequence number>.log`), each a run
//! of commits (a checksummed header, then the records; see `frame.rs`), and a small
//! `state` file with each sink's cursor and whether a run is going. Appending is one
//! positioned write and one `fdatasync`; delivering is positioned reads of what was
//! appended; a segment is removed once every sink has passed its last record.
//!
//! Invariants:
//! 1. [`Spool::append`] returns only after the records are durable with the configured
//!    [`Durability`]; with [`Durability::Immediate`] (the default) that is an fsync, so a
//!    record the caller was told about survives a crash of the process or the machine.
//!    [`GroupCommit`] lets a writer go on while the previous commit syncs; a sink is
//!    handed a record only once its commit is durable.
//! 2. Sequence numbers are dense and increase by one per record, across restarts.
//! 3. A sink's cursor only moves forward, and only through [`Spool::ack`], which a sink
//!    calls after its destination confirmed every record up to it. A cursor lost or left
//!    behind by a crash only means records are delivered again: a segment is removed only
//!    after the state that passes it is durable, and a damaged state file re-delivers
//!    everything held rather than skipping anything.
//! 4. After a restart every record after a sink's cursor is delivered again: delivery is
//!    at least once, and a duplicate is byte-for-byte the same record (same event id).
//! 5. A record is removed only once every registered sink's cursor has passed it, or by
//!    [`Spool::drop_oldest`], which the caller uses only after back-pressure failed and
//!    which reports what it dropped so the caller can write a gap record: never silent loss.
//! 6. A commit torn by a crash (never reported durable to anyone) is cut off on open and
//!    counted in [`Spool::recovered`]; damage anywhere else is an error, not a guess.

mod commit;
mod frame;
mod metrics;
mod state;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

pub use commit::GroupCommit;
use frame::{HEADER, Payload};
pub use metrics::register;
use state::{State, sync_dir};

/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Segments every sink has passed are kept (up to this many) to be written over: writing
/// over a file's blocks costs about half what growing a file does, page cache and
/// journal included, and an fsync of such a write updates no metadata.
const SPARES: usize = 2;

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
    #[error(
        "the spool segment {path} is damaged at byte {offset}: move it aside to start without it (its records after that byte are lost), or restore it from a backup"
    )]
    Damaged { path: PathBuf, offset: u64 },
    #[error("spool storage failed: {0}")]
    Storage(String),
    #[error("sink {0:?} is not registered with the spool")]
    UnknownSink(String),
    #[error("a sink name may not contain a line break: {0:?}")]
    BadName(String),
    #[error("the spool's writer has stopped")]
    Closed,
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

/// Records read back for delivery, sharing one buffer per commit: records `first`,
/// `first + 1`, … in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    pub first: u64,
    pub records: Vec<Bytes>,
}

impl Pending {
    /// The sequence number of the last record, if there is one.
    pub fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

/// What [`Spool::drop_oldest`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub first: u64,
    pub last: u64,
    pub records: Vec<Vec<u8>>,
}

/// What opening the spool found and mended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes of a commit torn by a crash, cut off the end of the log. Such a commit was
    /// never durable, so no caller was told its records were spooled.
    pub torn_bytes: u64,
    /// The state file was missing or damaged while records were held: every sink is
    /// delivered everything held again, and the last run counts as not ended cleanly.
    pub state_lost: bool,
}

/// One commit in memory: where its records are.
struct Batch {
    first: u64,
    /// Offset of the payload in its segment.
    at: u64,
    /// Where each record ends in the payload (each starts 4 bytes after the last ended).
    ends: Box<[u32]>,
}

impl Batch {
    fn last(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }

    /// Payload range of record `i` (its bytes, without the length field).
    fn span(&self, i: usize) -> (u32, u32) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (start + 4, self.ends[i])
    }
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written (the next commit goes here).
    len: u64,
    batches: VecDeque<Batch>,
}

struct Inner {
    segments: VecDeque<Segment>,
    state: State,
    /// The highest sequence number known durable: what sinks may be handed.
    durable: u64,
    /// Bytes of the records after the floor.
    held: u64,
    /// Records up to here are out of `held` and out of the index.
    released: u64,
    received: Option<u64>,
    state_lost: bool,
    /// Records removed by [`Spool::drop_oldest`] since open.
    dropped: u64,
    /// Passed segments kept to be written over (renamed `spare-<n>`).
    spares: Vec<PathBuf>,
    /// The next spare's number.
    spare_no: u64,
}

impl Inner {
    /// Every sink has passed this record (or, with no sink, nothing has been released).
    fn floor(&self) -> u64 {
        self.state
            .cursors
            .values()
            .min()
            .copied()
            .unwrap_or(self.released)
            .max(self.released)
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("the spool always has a segment")
    }

    /// Takes the records every sink has passed out of `held` and the index; returns the
    /// segments that may now be removed (all but the active one, once empty).
    fn release(&mut self) -> Vec<Segment> {
        let floor = self.floor();
        'outer: while self.released < floor {
            for seg in self.segments.iter_mut() {
                let Some(batch) = seg.batches.front() else {
                    continue;
                };
                let upto = floor.min(batch.last());
                for seq in self.released.max(batch.first - 1) + 1..=upto {
                    let (s, e) = batch.span((seq - batch.first) as usize);
                    self.held -= u64::from(e - s);
                }
                self.released = upto;
                if batch.last() <= floor {
                    seg.batches.pop_front();
                }
                continue 'outer;
            }
            // Nothing indexed is left below the floor.
            self.released = floor;
        }
        let mut gone = Vec::new();
        while self.segments.len() > 1 && self.segments[0].batches.is_empty() {
            gone.extend(self.segments.pop_front());
        }
        gone
    }

    /// Where records `from..=to` are: (file, offset, payload bytes, their ends, first seq).
    /// At least one record (if any), and no more than `max_bytes` of records after it.
    fn locate(&self, from: u64, to: u64, max_bytes: usize) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        if from > to {
            return out;
        }
        let mut left = max_bytes;
        for seg in &self.segments {
            let start = seg.batches.partition_point(|b| b.last() < from);
            for batch in seg.batches.range(start..) {
                if batch.first > to {
                    return out;
                }
                let i0 = from.saturating_sub(batch.first) as usize;
                let i1 = (to.min(batch.last()) - batch.first) as usize;
                let base = if i0 == 0 { 0 } else { batch.ends[i0 - 1] };
                let limit = u64::from(base).saturating_add(left as u64);
                let fit = batch.ends[i0..=i1].partition_point(|&e| u64::from(e) <= limit);
                let n = if out.is_empty() { fit.max(1) } else { fit };
                if n == 0 {
                    return out;
                }
                let len = (batch.ends[i0 + n - 1] - base) as usize;
                out.push(Piece {
                    file: seg.file.clone(),
                    at: batch.at + u64::from(base),
                    len,
                    first: batch.first + i0 as u64,
                    count: n,
                });
                left = left.saturating_sub(len);
                if n <= i1 - i0 {
                    return out;
                }
            }
        }
        out
    }
}

/// A run of records in one commit, to be read without holding the lock.
struct Piece {
    file: Arc<File>,
    at: u64,
    len: usize,
    first: u64,
    count: usize,
}

/// Reads `pieces` (in order): one buffer per piece, each record a slice of it.
fn read_pieces(pieces: Vec<Piece>) -> Result<Pending, SpoolError> {
    let mut out = Pending {
        first: pieces.first().map_or(0, |p| p.first),
        records: Vec::with_capacity(pieces.iter().map(|p| p.count).sum()),
    };
    for p in pieces {
        let mut buf = BytesMut::zeroed(p.len);
        p.file.read_exact_at(&mut buf, p.at).map_err(storage)?;
        let buf = buf.freeze();
        let mut pos = 0usize;
        for _ in 0..p.count {
            let n = buf
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .filter(|n| pos + 4 + n <= buf.len())
                .ok_or_else(|| storage("a spooled commit changed under its reader"))?;
            out.records.push(buf.slice(pos + 4..pos + 4 + n));
            pos += 4 + n;
        }
    }
    Ok(out)
}

/// The spool: open one per directory.
pub struct Spool {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    recovered: Recovered,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from any crash.
    pub fn open(dir: &Path, durability: Durability) -> Result<Spool, SpoolError> {
        Spool::open_with(dir, durability, SEGMENT_BYTES)
    }

    /// [`Spool::open`] with segments of `segment_bytes` (small ones for tests).
    pub fn open_with(
        dir: &Path,
        durability: Durability,
        segment_bytes: u64,
    ) -> Result<Spool, SpoolError> {
        let open_err = |detail: String| SpoolError::Open {
            path: dir.to_owned(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        if dir.join("spool.redb").exists() {
            return Err(open_err(
                "it holds a spool in an older holdline's format (spool.redb): deliver it with that \
                 version, or move the directory aside to start an empty spool"
                    .into(),
            ));
        }
        let loaded = State::load(dir).map_err(|e| open_err(e.to_string()))?;
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut received = None;
        let mut next = None::<u64>;
        let mut held = 0u64;
        let (mut listed, mut spares) = list_segments(dir).map_err(|e| open_err(e.to_string()))?;
        listed.sort();
        for extra in spares.split_off(spares.len().min(SPARES)) {
            let _ = std::fs::remove_file(extra);
        }
        // Where the previous segment's commits ended: the next must start right there.
        let mut previous: Option<(PathBuf, u64)> = None;
        for (base, path) in listed {
            let data = std::fs::read(&path).map_err(|e| open_err(e.to_string()))?;
            if let (Some(n), Some((prev, at))) = (next, &previous)
                && n != base
            {
                return Err(SpoolError::Damaged {
                    path: prev.clone(),
                    offset: *at,
                });
            }
            let mut expected = base;
            let mut batches = VecDeque::new();
            let mut pos = 0u64;
            while let Some(c) = frame::read(&data, pos) {
                if c.first != expected || c.ends.is_empty() {
                    break;
                }
                expected += c.ends.len() as u64;
                held += c.record_bytes;
                if c.received != 0 {
                    received = Some(c.received);
                }
                batches.push_back(Batch {
                    first: c.first,
                    at: c.payload_at,
                    ends: c.ends.into_boxed_slice(),
                });
                pos = c.next;
            }
            if frame::later(&data, pos, expected).is_some() {
                return Err(SpoolError::Damaged {
                    path: path.clone(),
                    offset: pos,
                });
            }
            // What follows is either nothing, what an earlier use of a recycled file
            // left (older commits), or the commit a crash cut short (it starts like the
            // next one should). The next commit is written over it either way.
            if let Some(torn) = frame::started(&data, pos, expected) {
                recovered.torn_bytes = torn;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| open_err(e.to_string()))?;
            next = Some(expected);
            previous = Some((path.clone(), pos));
            segments.push_back(Segment {
                path,
                file: Arc::new(file),
                len: pos,
                batches,
            });
        }
        let oldest = segments
            .iter()
            .find_map(|s| s.batches.front().map(|b| b.first));
        let log_last = next.map_or(0, |n| n - 1);
        let mut state = match loaded {
            Ok(Some(s)) => s,
            Ok(None) if oldest.is_none() => State::default(),
            // Records held but no trustworthy cursors: deliver them all again.
            Ok(None) | Err(()) => {
                recovered.state_lost = true;
                State {
                    running: true,
                    ..State::default()
                }
            }
        };
        if recovered.state_lost {
            state.last = log_last;
        }
        let spool_dir = dir.to_owned();
        let new_segment = |base: u64| -> Result<Segment, SpoolError> {
            let path = segment_path(&spool_dir, base);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| open_err(e.to_string()))?;
            Ok(Segment {
                path,
                file: Arc::new(file),
                len: 0,
                batches: VecDeque::new(),
            })
        };
        // The numbering carries on from the log, or from the state when the log lost its
        // newest records (possible only without fsync).
        let last = log_last.max(state.last);
        if segments.is_empty() || last > log_last {
            if segments.back().is_some_and(|s| s.batches.is_empty()) {
                let empty = segments.pop_back().expect("just looked");
                let _ = std::fs::remove_file(&empty.path);
            }
            segments.push_back(new_segment(last + 1)?);
            if durability == Durability::Immediate {
                sync_dir(dir).map_err(|e| open_err(e.to_string()))?;
            }
        }
        state.last = last;
        for cursor in state.cursors.values_mut() {
            *cursor = (*cursor).min(last);
        }
        let released = oldest.map_or(last, |o| o - 1);
        let mut inner = Inner {
            segments,
            state,
            durable: last,
            held,
            released,
            received,
            state_lost: recovered.state_lost,
            dropped: 0,
            // Past every spare's number: a new spare never takes an existing one's name.
            spare_no: spares
                .iter()
                .filter_map(|p| spare_number(p))
                .max()
                .map_or(0, |n| n + 1),
            spares,
        };
        let gone = inner.release();
        let spool = Spool {
            dir: dir.to_owned(),
            durability,
            segment_bytes,
            inner: Mutex::new(inner),
            recovered,
        };
        spool.remove(gone)?;
        Ok(spool)
    }

    /// What opening found and mended.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync(&self) -> bool {
        self.durability == Durability::Immediate
    }

    fn save(&self, inner: &Inner, sync: bool) -> Result<(), SpoolError> {
        inner
            .state
            .save(&self.dir, sync && self.sync())
            .map_err(storage)
    }

    /// Removes segments every sink has passed (their passing is already saved).
    fn remove(&self, gone: Vec<Segment>) -> Result<(), SpoolError> {
        if gone.is_empty() {
            return Ok(());
        }
        for seg in gone {
            let mut inner = self.lock();
            if inner.spares.len() < SPARES {
                let spare = self.dir.join(format!("spare-{}", inner.spare_no));
                inner.spare_no += 1;
                std::fs::rename(&seg.path, &spare).map_err(storage)?;
                inner.spares.push(spare);
            } else {
                drop(inner);
                std::fs::remove_file(&seg.path).map_err(storage)?;
            }
        }
        if self.sync() {
            sync_dir(&self.dir).map_err(storage)?;
        }
        Ok(())
    }

    /// Registers `sink` (its cursor starts at the current end of the log, so a new sink
    /// does not replay history); a known sink keeps its cursor.
    pub fn register(&self, sink: &str) -> Result<u64, SpoolError> {
        if sink.contains(['\n', '\r']) {
            return Err(SpoolError::BadName(sink.to_owned()));
        }
        let mut inner = self.lock();
        if let Some(c) = inner.state.cursors.get(sink) {
            return Ok(*c);
        }
        // After a lost state, a sink it knew must not skip what it had not confirmed.
        let cursor = if inner.state_lost {
            inner.released
        } else {
            inner.state.last
        };
        inner.state.cursors.insert(sink.to_owned(), cursor);
        self.save(&inner, true)?;
        Ok(cursor)
    }

    /// Every sink the spool keeps a cursor for, with how many records it has not confirmed.
    pub fn sinks(&self) -> Vec<(String, u64)> {
        let inner = self.lock();
        let last = inner.state.last;
        inner
            .state
            .cursors
            .iter()
            .map(|(name, c)| (name.clone(), last.saturating_sub(*c)))
            .collect()
    }

    /// Stops keeping records for `sink` (one no longer configured); what only it had not
    /// confirmed can go.
    pub fn forget(&self, sink: &str) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        if inner.state.cursors.remove(sink).is_none() {
            return Ok(());
        }
        if inner.state.cursors.is_empty() {
            inner.released = inner.released.max(inner.state.last);
        }
        let gone = inner.release();
        self.save(&inner, true)?;
        drop(inner);
        self.remove(gone)
    }

    /// Starts a run. Returns when the newest event of the previous run was received
    /// (unix microseconds) if that run did not end cleanly: events from then until this
    /// run receives again were missed, and the caller must say so with a gap.
    pub fn begin_run(&self) -> Result<Option<u64>, SpoolError> {
        let mut inner = self.lock();
        let unclean = if inner.state.running {
            inner.received
        } else {
            None
        };
        inner.state.running = true;
        self.save(&inner, true)?;
        Ok(unclean)
    }

    /// Ends a run cleanly (every event received was spooled).
    pub fn end_run(&self) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        inner.state.running = false;
        self.save(&inner, true)
    }

    /// [`Spool::append`], also noting when the newest event in `records` was received.
    pub fn append_received<R: AsRef<[u8]>>(
        &self,
        records: &[R],
        received: Option<u64>,
    ) -> Result<u64, SpoolError> {
        let mut payload = Payload::default();
        for r in records {
            payload.push(r.as_ref());
        }
        self.append_payload(&payload, received)
    }

    /// Appends `records` in one commit and returns the sequence number of the last one;
    /// returns once the commit is durable.
    pub fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<u64, SpoolError> {
        self.append_received(records, None)
    }

    fn append_payload(&self, payload: &Payload, received: Option<u64>) -> Result<u64, SpoolError> {
        if payload.bytes.len() > frame::MAX_PAYLOAD {
            return Err(storage("a commit of more than 4 GiB"));
        }
        let (file, last) = {
            let mut inner = self.lock();
            if payload.is_empty() {
                return Ok(inner.state.last);
            }
            let size = (HEADER + payload.bytes.len()) as u64;
            if inner.active().len > 0 && inner.active().len + size > self.segment_bytes {
                self.rotate(&mut inner)?;
            }
            let first = inner.state.last + 1;
            let head = frame::header(
                first,
                payload.len() as u32,
                received.unwrap_or(0),
                &payload.bytes,
            );
            let seg = inner.active();
            let at = seg.len;
            seg.file.write_all_at(&head, at).map_err(storage)?;
            seg.file
                .write_all_at(&payload.bytes, at + HEADER as u64)
                .map_err(storage)?;
            seg.len += size;
            seg.batches.push_back(Batch {
                first,
                at: at + HEADER as u64,
                ends: payload.ends.clone().into_boxed_slice(),
            });
            let file = seg.file.clone();
            let last = first + payload.len() as u64 - 1;
            inner.state.last = last;
            inner.held += payload.record_bytes;
            if received.is_some() {
                inner.received = received;
            }
            if !self.sync() {
                inner.durable = last;
            }
            (file, last)
        };
        if self.sync() {
            // Outside the lock: sinks go on reading what is already durable.
            file.sync_data().map_err(storage)?;
            let mut inner = self.lock();
            inner.durable = inner.durable.max(last);
        }
        Ok(last)
    }

    /// Closes the active segment (durably) and starts the next.
    fn rotate(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        if self.sync() {
            inner.active().file.sync_data().map_err(storage)?;
        }
        let base = inner.state.last + 1;
        let path = segment_path(&self.dir, base);
        // A spare is written over from its start; what it held before is older commits,
        // which recovery tells apart by their sequence numbers.
        if let Some(spare) = inner.spares.pop() {
            std::fs::rename(&spare, &path).map_err(storage)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(storage)?;
        if self.sync() {
            sync_dir(&self.dir).map_err(storage)?;
        }
        inner.segments.push_back(Segment {
            path,
            file: Arc::new(file),
            len: 0,
            batches: VecDeque::new(),
        });
        Ok(())
    }

    /// Up to `max` durable records after `sink`'s cursor, oldest first.
    pub fn pending(&self, sink: &str, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let p = self.pending_shared(sink, max, usize::MAX)?;
        Ok((p.first..)
            .zip(p.records)
            .map(|(seq, r)| Spooled {
                seq,
                record: r.to_vec(),
            })
            .collect())
    }

    /// [`Spool::pending`] without a copy per record, and no more than about `max_bytes`
    /// (always at least one record): what a delivery loop reads.
    pub fn pending_shared(
        &self,
        sink: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<Pending, SpoolError> {
        let pieces = {
            let inner = self.lock();
            let cursor = *inner
                .state
                .cursors
                .get(sink)
                .ok_or_else(|| SpoolError::UnknownSink(sink.to_owned()))?;
            let from = cursor.max(inner.released) + 1;
            let to = inner
                .durable
                .min(from.saturating_add(max as u64).saturating_sub(1));
            if max == 0 {
                return Ok(Pending::default());
            }
            inner.locate(from, to, max_bytes)
        };
        read_pieces(pieces)
    }

    /// `sink`'s destination confirmed every record up to `seq`: moves its cursor (never
    /// back) and removes the segments every sink has passed.
    pub fn ack(&self, sink: &str, seq: u64) -> Result<(), SpoolError> {
        let gone = {
            let mut inner = self.lock();
            let last = inner.state.last;
            let cursor = inner
                .state
                .cursors
                .get_mut(sink)
                .ok_or_else(|| SpoolError::UnknownSink(sink.to_owned()))?;
            if seq <= *cursor {
                return Ok(());
            }
            *cursor = seq.min(last);
            let gone = inner.release();
            // Durable before a segment goes, so no saved cursor points into a removed one.
            self.save(&inner, !gone.is_empty())?;
            gone
        };
        self.remove(gone)
    }

    /// Bytes of the records held.
    pub fn held_bytes(&self) -> Result<u64, SpoolError> {
        Ok(self.lock().held)
    }

    /// Records the slowest sink has not confirmed.
    pub fn deepest(&self) -> u64 {
        let inner = self.lock();
        let last = inner.state.last;
        inner
            .state
            .cursors
            .values()
            .map(|c| last.saturating_sub(*c))
            .max()
            .unwrap_or(0)
    }

    /// Records removed by [`Spool::drop_oldest`] since the spool was opened.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Records waiting for `sink`.
    pub fn depth(&self, sink: &str) -> Result<u64, SpoolError> {
        let inner = self.lock();
        let cursor = inner
            .state
            .cursors
            .get(sink)
            .ok_or_else(|| SpoolError::UnknownSink(sink.to_owned()))?;
        Ok(inner.state.last.saturating_sub(*cursor))
    }

    /// Records held (delivered to some sinks but not all, or to none).
    pub fn len(&self) -> Result<u64, SpoolError> {
        let inner = self.lock();
        Ok(inner.state.last.saturating_sub(inner.floor()))
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    /// Removes the `count` oldest undelivered records and moves every cursor past them.
    /// Only for when back-pressure has failed: the caller must report what was dropped.
    pub fn drop_oldest(&self, count: usize) -> Result<Option<Dropped>, SpoolError> {
        let Some(dropped) = self.oldest(None, count)? else {
            return Ok(None);
        };
        self.forget_through(dropped.last)?;
        Ok(Some(dropped))
    }

    /// Reads (without removing) up to `count` of the oldest undelivered records, after
    /// sequence number `after` when given: what [`Spool::forget_through`] would drop.
    pub fn oldest(&self, after: Option<u64>, count: usize) -> Result<Option<Dropped>, SpoolError> {
        let inner = self.lock();
        let floor = inner.floor().max(after.unwrap_or(0));
        let first = floor + 1;
        let last = inner.state.last.min(floor.saturating_add(count as u64));
        if count == 0 || first > last {
            return Ok(None);
        }
        // Read under the lock: a segment passed meanwhile could be recycled.
        let records = read_pieces(inner.locate(first, last, usize::MAX))?
            .records
            .into_iter()
            .map(|r| r.to_vec())
            .collect();
        Ok(Some(Dropped {
            first,
            last,
            records,
        }))
    }

    /// Moves every cursor past `last`, dropping what no sink has confirmed up to it. Only
    /// for when back-pressure has failed, once what is dropped has been reported durably.
    pub fn forget_through(&self, last: u64) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        let floor = inner.floor();
        let last = last.min(inner.state.last);
        if last <= floor {
            return Ok(());
        }
        for cursor in inner.state.cursors.values_mut() {
            *cursor = (*cursor).max(last);
        }
        if inner.state.cursors.is_empty() {
            inner.released = last;
        }
        inner.dropped += last - floor;
        let gone = inner.release();
        self.save(&inner, true)?;
        drop(inner);
        self.remove(gone)
    }
}

fn spare_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("spare-")?
        .parse()
        .ok()
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The segments (by first sequence number) and the spares in `dir`.
type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

fn list_segments(dir: &Path) -> std::io::Result<Listing> {
    let (mut segments, mut spares) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u64>().ok())
        {
            segments.push((base, path));
        } else if name.starts_with("spare-") {
            spares.push(path);
        }
    }
    Ok((segments, spares))
}

#[cfg(test)]
mod tests;
