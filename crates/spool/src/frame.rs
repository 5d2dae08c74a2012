//! One commit on disk: a header, then the records, each behind its length.
//!
//! ```text
//! magic u32 | payload_len u32 | first_seq u64 | count u32 | received u64 | checksum u64
//! payload: count × (len u32, bytes)
//! ```
//!
//! Little-endian. `received` is when the newest event in the commit was received (unix
//! microseconds, 0 for none). The checksum is xxh3 over the header before it and the
//! payload, so a commit torn by a crash, or any later corruption, is recognised on open.

use xxhash_rust::xxh3::Xxh3;

pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"HLSP");
pub(crate) const HEADER: usize = 36;
/// The most bytes of records one commit may carry (a length field is 32 bits).
pub(crate) const MAX_PAYLOAD: usize = u32::MAX as usize - 1;

/// Records laid out as a commit's payload: each behind its length.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    pub bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    pub ends: Vec<u32>,
    /// Bytes of the records themselves (without the length fields).
    pub record_bytes: u64,
}

impl Payload {
    pub fn push(&mut self, record: &[u8]) {
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len() as u32);
        self.record_bytes += record.len() as u64;
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.record_bytes = 0;
    }
}

/// The header for `payload` holding `count` records from `first`.
pub(crate) fn header(first: u64, count: u32, received: u64, payload: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&first.to_le_bytes());
    h[16..20].copy_from_slice(&count.to_le_bytes());
    h[20..28].copy_from_slice(&received.to_le_bytes());
    let sum = checksum(&h[..28], payload);
    h[28..36].copy_from_slice(&sum.to_le_bytes());
    h
}

fn checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut x = Xxh3::new();
    x.update(head);
    x.update(payload);
    x.digest()
}

/// A commit read back from a segment.
#[derive(Debug)]
pub(crate) struct Read {
    pub first: u64,
    pub received: u64,
    /// Offset of the payload in the segment.
    pub payload_at: u64,
    pub ends: Vec<u32>,
    pub record_bytes: u64,
    /// Offset just past the commit.
    pub next: u64,
}

/// Reads the commit at `at` in `data`, or `None` if there is no whole, intact commit there
/// (the end of the segment, a commit torn by a crash, or corruption).
pub(crate) fn read(data: &[u8], at: u64) -> Option<Read> {
    let start = usize::try_from(at).ok()?;
    let h = data.get(start..start.checked_add(HEADER)?)?;
    let word = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&h[r]);
        u64::from_le_bytes(b)
    };
    if word(0..4) as u32 != MAGIC {
        return None;
    }
    let len = word(4..8) as usize;
    let first = word(8..16);
    let count = word(16..20) as usize;
    let received = word(20..28);
    let sum = word(28..36);
    let payload_at = start + HEADER;
    let payload = data.get(payload_at..payload_at.checked_add(len)?)?;
    if checksum(&h[..28], payload) != sum {
        return None;
    }
    let mut ends = Vec::with_capacity(count.min(len / 4));
    let mut record_bytes = 0u64;
    let mut pos = 0usize;
    for _ in 0..count {
        let n = u32::from_le_bytes(payload.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos = pos.checked_add(4 + n).filter(|p| *p <= len)?;
        ends.push(pos as u32);
        record_bytes += n as u64;
    }
    (pos == len).then_some(Read {
        first,
        received,
        payload_at: payload_at as u64,
        ends,
        record_bytes,
        next: (payload_at + len) as u64,
    })
}

/// Where an intact commit after `at` continues the log past record `expected`: proof that
/// what stopped the reading at `at` is damage in the middle, not a torn end (a torn end is
/// the last thing written; older commits left in a recycled file hold older records).
pub(crate) fn later(data: &[u8], at: u64, expected: u64) -> Option<u64> {
    let start = usize::try_from(at).ok()?;
    let magic = MAGIC.to_le_bytes();
    let tail = data.get(start..)?;
    tail.windows(magic.len())
        .enumerate()
        .skip(1)
        .filter(|(_, w)| *w == magic)
        .map(|(i, _)| (start + i) as u64)
        .find(|&pos| read(data, pos).is_some_and(|c| c.first > expected))
}

/// If the bytes at `at` begin the commit of record `first` but it is not whole (a crash cut
/// it short), how many bytes it claims; `None` for anything else (the end of the data, or
/// older commits left in a recycled file).
pub(crate) fn started(data: &[u8], at: u64, first: u64) -> Option<u64> {
    let start = usize::try_from(at).ok()?;
    let h = data.get(start..)?;
    let magic = h.get(0..4)? == MAGIC.to_le_bytes();
    // A header cut before its sequence number still counts when its magic is there.
    let seq = h
        .get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    if !magic || seq.is_some_and(|s| s != first) {
        return None;
    }
    let len = h.get(4..8).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64
    });
    Some((HEADER as u64 + len).min(h.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(first: u64, records: &[&[u8]]) -> Vec<u8> {
        let mut p = Payload::default();
        for r in records {
            p.push(r);
        }
        let mut out = header(first, p.len() as u32, 7, &p.bytes).to_vec();
        out.extend_from_slice(&p.bytes);
        out
    }

    #[test]
    fn a_commit_reads_back_and_any_damage_is_refused() {
        let data = commit(5, &[b"one", b"", b"three"]);
        let r = read(&data, 0).unwrap();
        assert_eq!((r.first, r.received, r.ends.len()), (5, 7, 3));
        assert_eq!(r.record_bytes, 8);
        assert_eq!(r.next, data.len() as u64);
        assert!(read(&data, r.next).is_none(), "nothing after it");
        for cut in 0..data.len() {
            assert!(read(&data[..cut], 0).is_none(), "torn at {cut}");
        }
        for flip in 0..data.len() {
            let mut bad = data.clone();
            bad[flip] ^= 0x10;
            assert!(read(&bad, 0).is_none(), "bit flipped at {flip}");
        }
    }
}
