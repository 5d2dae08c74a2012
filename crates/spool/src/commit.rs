//! Group commit: a writer hands records over and goes on while a thread of the spool's
//! own commits them; whatever arrived during one commit's fsync goes into the next. So the
//! fsync costs throughput only when the disk is the bottleneck, and commits grow with the
//! rate instead of being fixed in size.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::frame::Payload;
use crate::{Spool, SpoolError};

/// Records handed over and not yet committed, and what happened to earlier ones.
#[derive(Default)]
struct Queue {
    next: Payload,
    received: Option<u64>,
    /// Record bytes in the commit being written now.
    in_flight: u64,
    submitted: u64,
    committed: u64,
    closed: bool,
    failed: Option<String>,
}

struct Shared {
    spool: Arc<Spool>,
    queue: Mutex<Queue>,
    /// The committer waits here for records.
    work: Condvar,
    /// Writers wait here for room, or for their records to be committed.
    done: Condvar,
    max_queued: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The spool's committing thread. Dropping it commits what was handed over and stops it.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts committing to `spool`: writers wait once `max_queued` bytes are waiting (the
    /// commit being written does not count). `on_commit` is called with the last sequence
    /// number of every commit once it is durable.
    pub fn start(
        spool: Arc<Spool>,
        max_queued: usize,
        on_commit: impl FnMut(u64) + Send + 'static,
    ) -> Result<GroupCommit, SpoolError> {
        let shared = Arc::new(Shared {
            spool,
            queue: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            max_queued: max_queued.max(1),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || commit(&worker, on_commit))
            .map_err(|e| SpoolError::Storage(format!("cannot start the spool's writer: {e}")))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `records` over for the next commit; waits only while the queue is full.
    /// `received` is when the newest of them was received (unix microseconds). An error
    /// means an earlier commit failed (the spool's disk): nothing more is accepted.
    pub fn submit<R: AsRef<[u8]>>(
        &self,
        records: &[R],
        received: Option<u64>,
    ) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut q = self.shared.lock();
        loop {
            if let Some(e) = &q.failed {
                return Err(SpoolError::Storage(e.clone()));
            }
            if q.closed {
                return Err(SpoolError::Closed);
            }
            if q.next.bytes.len() < self.shared.max_queued {
                break;
            }
            q = self.shared.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        for r in records {
            q.next.push(r.as_ref());
        }
        q.received = q.received.max(received);
        q.submitted += records.len() as u64;
        drop(q);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Bytes of records handed over and not yet committed.
    pub fn queued_bytes(&self) -> u64 {
        let q = self.shared.lock();
        q.next.record_bytes + q.in_flight
    }

    /// Waits until everything handed over so far is durable.
    pub fn flush(&self) -> Result<(), SpoolError> {
        let mut q = self.shared.lock();
        let target = q.submitted;
        while q.committed < target {
            if let Some(e) = &q.failed {
                return Err(SpoolError::Storage(e.clone()));
            }
            q = self.shared.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Commits everything handed over, then stops the thread.
    pub fn finish(mut self) -> Result<(), SpoolError> {
        self.stop();
        match self.shared.lock().failed.clone() {
            Some(e) => Err(SpoolError::Storage(e)),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            self.shared.lock().failed = Some("the spool's writer panicked".into());
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn commit(shared: &Shared, mut on_commit: impl FnMut(u64)) {
    let mut batch = Payload::default();
    loop {
        let received = {
            let mut q = shared.lock();
            while q.next.is_empty() && !q.closed {
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.next.is_empty() {
                return;
            }
            batch.clear();
            std::mem::swap(&mut batch, &mut q.next);
            q.in_flight = batch.record_bytes;
            q.received.take()
        };
        // Writers may fill the next commit while this one syncs.
        shared.done.notify_all();
        let result = shared.spool.append_payload(&batch, received);
        // Told before the commit counts, so that `flush` returning means it was told.
        if let Ok(last) = result {
            on_commit(last);
        }
        let mut q = shared.lock();
        q.in_flight = 0;
        match result {
            Ok(_) => {
                q.committed += batch.len() as u64;
                drop(q);
                shared.done.notify_all();
            }
            Err(e) => {
                q.failed = Some(e.to_string());
                drop(q);
                shared.done.notify_all();
                return;
            }
        }
    }
}
