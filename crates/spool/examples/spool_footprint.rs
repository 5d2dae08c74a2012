//! Disk bytes per event and append/drain rates of the spool.
//!
//! `cargo run -p holdline-spool --release --example spool_footprint [DIR] [EVENTS]`
//!
//! Appends EVENTS records of about 2.4 KB (the benchmark's average event) in batches of
//! 256 with an fsync per batch, reports the file size per record while they are all held,
//! then drains them through one sink and reports the size again (passed segments are
//! removed but for two kept as spares to write over; the one being written stays).

use std::time::Instant;

use holdline_spool::{Durability, Spool};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("holdline-spool-footprint-{}", std::process::id()))
        });
    let events: usize = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(&dir, Durability::Immediate)?;
    spool.register("sink")?;
    let record = {
        let mut r = br#"{"kind":"event","id":"0123456789abcdef","topic":"v2.routing.queues.00000000-b0b0-4000-8000-000000000000.conversations","received_at":"2026-11-27T10:00:00.000000Z","org":"default","channel":"streaming-0-abc","body":{"#.to_vec();
        while r.len() < 2400 {
            r.extend_from_slice(br#""participant":"a1b2c3d4-e5f6-4a5b-8c7d-9e8f7a6b5c4d","#);
        }
        r.extend_from_slice(b"\"end\":true}}\n");
        r
    };
    let batch: Vec<&[u8]> = vec![&record; 256];
    let start = Instant::now();
    let mut written = 0;
    while written < events {
        let n = batch.len().min(events - written);
        spool.append(&batch[..n])?;
        written += n;
    }
    let append_s = start.elapsed().as_secs_f64();
    let size = |dir: &std::path::Path| -> std::io::Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            total += e?.metadata()?.len();
        }
        Ok(total)
    };
    let held = size(&dir)?;
    let start = Instant::now();
    loop {
        let pending = spool.pending("sink", 1024)?;
        let Some(last) = pending.last().map(|p| p.seq) else {
            break;
        };
        spool.ack("sink", last)?;
    }
    let drain_s = start.elapsed().as_secs_f64();
    let after = size(&dir)?;
    println!("records: {events} of {} bytes", record.len());
    println!(
        "append (fsync per 256): {:.0} records/s, {:.1} MB/s",
        events as f64 / append_s,
        (events * record.len()) as f64 / append_s / 1e6
    );
    println!("drain + ack: {:.0} records/s", events as f64 / drain_s);
    println!(
        "files while held: {:.1} MB, {:.0} bytes per record ({:.2}x the record)",
        held as f64 / 1e6,
        held as f64 / events as f64,
        held as f64 / (events * record.len()) as f64
    );
    println!(
        "files after draining: {:.1} MB (the segment being written and up to two spares stay)",
        after as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
