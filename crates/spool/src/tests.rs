use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn records(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect()
}

#[test]
fn records_come_back_in_order_after_the_cursor_and_acks_remove_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert_eq!(spool.register("stdout").unwrap(), 0);
    assert_eq!(spool.append(&records(0..5)).unwrap(), 5);
    assert_eq!(spool.depth("stdout").unwrap(), 5);
    let got = spool.pending("stdout", 3).unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(got[0].record, b"{\"n\":0}");
    spool.ack("stdout", 3).unwrap();
    assert_eq!(spool.depth("stdout").unwrap(), 2);
    assert_eq!(spool.len().unwrap(), 2, "acknowledged records are removed");
    let rest = spool.pending("stdout", 10).unwrap();
    assert_eq!(rest.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![4, 5]);
    // A cursor never moves back.
    spool.ack("stdout", 1).unwrap();
    assert_eq!(spool.depth("stdout").unwrap(), 2);
}

#[test]
fn everything_after_the_cursor_is_delivered_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
        spool.register("stdout").unwrap();
        spool.append(&records(0..10)).unwrap();
        spool.ack("stdout", 4).unwrap();
        // Dropped without any shutdown: what was committed is what counts.
    }
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert_eq!(spool.register("stdout").unwrap(), 4, "the cursor survived");
    let again = spool.pending("stdout", 100).unwrap();
    assert_eq!(again.len(), 6);
    assert_eq!(again[0].seq, 5);
    assert_eq!(again[0].record, b"{\"n\":4}");
    // Numbering carries on, even when every record was acknowledged.
    spool.ack("stdout", 10).unwrap();
    assert!(spool.is_empty().unwrap());
    drop(spool);
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    assert_eq!(spool.append(&records(0..1)).unwrap(), 11);
}

#[test]
fn a_record_stays_until_every_sink_has_passed_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    spool.register("fast").unwrap();
    spool.register("slow").unwrap();
    spool.append(&records(0..4)).unwrap();
    spool.ack("fast", 4).unwrap();
    assert_eq!(spool.len().unwrap(), 4, "slow has not confirmed any");
    assert_eq!(spool.pending("slow", 10).unwrap().len(), 4);
    spool.ack("slow", 2).unwrap();
    assert_eq!(spool.len().unwrap(), 2);
    assert!(matches!(
        spool.ack("nobody", 1),
        Err(SpoolError::UnknownSink(_))
    ));
}

#[test]
fn a_new_sink_starts_at_the_end_and_does_not_replay_history() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    spool.register("first").unwrap();
    spool.append(&records(0..3)).unwrap();
    assert_eq!(spool.register("late").unwrap(), 3);
    assert!(spool.pending("late", 10).unwrap().is_empty());
}

#[test]
fn dropping_the_oldest_reports_them_and_moves_every_cursor_past() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    spool.register("a").unwrap();
    spool.register("b").unwrap();
    spool.append(&records(0..6)).unwrap();
    spool.ack("a", 1).unwrap();
    let dropped = spool.drop_oldest(3).unwrap().unwrap();
    assert_eq!((dropped.first, dropped.last), (1, 3));
    assert_eq!(dropped.records[0], b"{\"n\":0}");
    assert_eq!(spool.pending("a", 10).unwrap()[0].seq, 4);
    assert_eq!(spool.pending("b", 10).unwrap()[0].seq, 4);
    assert_eq!(spool.len().unwrap(), 3);
    spool.ack("a", 6).unwrap();
    spool.ack("b", 6).unwrap();
    assert_eq!(spool.drop_oldest(3).unwrap(), None);
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Spool::open(&file, Durability::Immediate).err().unwrap();
    assert!(err.to_string().contains("cannot open the spool"), "{err}");
}

#[test]
fn a_run_that_did_not_end_cleanly_reports_its_last_received_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
        assert_eq!(spool.begin_run().unwrap(), None, "a fresh spool had no run");
        spool.append_received(&records(0..2), Some(1_000)).unwrap();
        spool.append_received(&records(2..3), Some(2_000)).unwrap();
        // Killed: no end_run.
    }
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert_eq!(spool.begin_run().unwrap(), Some(2_000));
    spool.end_run().unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert_eq!(
        spool.begin_run().unwrap(),
        None,
        "the last run ended cleanly"
    );
}

#[test]
fn held_bytes_follow_appends_acks_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    spool.register("s").unwrap();
    let batch = records(0..10); // each record is 7 or 8 bytes
    let total: u64 = batch.iter().map(|r| r.len() as u64).sum();
    spool.append(&batch).unwrap();
    assert_eq!(spool.held_bytes().unwrap(), total);
    spool.ack("s", 2).unwrap();
    let first_two = (batch[0].len() + batch[1].len()) as u64;
    assert_eq!(spool.held_bytes().unwrap(), total - first_two);
    let dropped = spool.drop_oldest(3).unwrap().unwrap();
    let dropped_bytes: u64 = dropped.records.iter().map(|r| r.len() as u64).sum();
    assert_eq!(
        spool.held_bytes().unwrap(),
        total - first_two - dropped_bytes
    );
    spool.ack("s", 10).unwrap();
    assert_eq!(spool.held_bytes().unwrap(), 0);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_commit_torn_by_a_crash_is_cut_off_and_numbering_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
        spool.register("s").unwrap();
        spool.append(&records(0..3)).unwrap();
        spool.append(&records(3..6)).unwrap();
    }
    // The second commit loses its last bytes, as when the machine stops mid-write.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert!(spool.recovered().torn_bytes > 0);
    let got = spool.pending("s", 100).unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(spool.append(&records(9..10)).unwrap(), 4);
    assert_eq!(spool.pending("s", 100).unwrap()[3].record, b"{\"n\":9}");
}

#[test]
fn damage_before_the_end_of_the_log_is_an_error_that_names_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open_with(dir.path(), Durability::Eventual, 64).unwrap();
        spool.register("s").unwrap();
        for i in 0..4 {
            spool.append(&records(i * 3..i * 3 + 3)).unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "small segments rotate: {files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let err = Spool::open(dir.path(), Durability::Eventual).unwrap_err();
    assert!(
        matches!(err, SpoolError::Damaged { ref path, .. } if *path == files[0]),
        "{err}"
    );
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn damage_inside_the_newest_segment_is_an_error_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
        spool.register("s").unwrap();
        for i in 0..4 {
            spool.append(&records(i * 3..i * 3 + 3)).unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    // Inside the second commit's payload: the third and fourth commits follow it intact.
    let second = bytes.len() / 4 + 40;
    bytes[second] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let err = Spool::open(dir.path(), Durability::Eventual).unwrap_err();
    assert!(
        matches!(err, SpoolError::Damaged { ref path, .. } if *path == files[0]),
        "{err}"
    );
}

#[test]
fn spares_are_numbered_past_every_one_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open_with(dir.path(), Durability::Eventual, 64).unwrap();
        spool.register("s").unwrap();
        for i in 0..3 {
            spool.append(&records(i * 3..i * 3 + 3)).unwrap();
        }
    }
    // A gap in the spares' numbers, as a crash between two renames can leave.
    std::fs::write(dir.path().join("spare-1"), b"").unwrap();
    let spool = Spool::open_with(dir.path(), Durability::Eventual, 64).unwrap();
    // Passed segments become spares before any is taken.
    spool.ack("s", 9).unwrap();
    // Then each new segment takes a spare, each spare a different file.
    for i in 3..7 {
        spool.append(&records(i * 3..i * 3 + 3)).unwrap();
    }
    assert_eq!(spool.pending("s", 100).unwrap().len(), 12);
}

#[test]
fn segments_rotate_and_go_once_every_sink_has_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_with(dir.path(), Durability::Immediate, 256).unwrap();
    spool.register("a").unwrap();
    spool.register("b").unwrap();
    for i in 0..20 {
        spool.append(&records(i * 5..i * 5 + 5)).unwrap();
    }
    let many = segment_files(dir.path()).len();
    assert!(many > 5, "{many} segments");
    spool.ack("a", 100).unwrap();
    assert_eq!(segment_files(dir.path()).len(), many, "b has not confirmed");
    spool.ack("b", 50).unwrap();
    let half = segment_files(dir.path()).len();
    assert!(half < many && half > 1, "{half} of {many}");
    assert_eq!(spool.pending("b", 1).unwrap()[0].seq, 51);
    spool.ack("b", 100).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the active segment stays"
    );
    assert!(spool.is_empty().unwrap());
    drop(spool);
    let spool = Spool::open_with(dir.path(), Durability::Immediate, 256).unwrap();
    assert_eq!(spool.append(&records(0..1)).unwrap(), 101);
    assert_eq!(spool.register("b").unwrap(), 100);
}

#[test]
fn a_damaged_state_file_delivers_everything_held_again_and_counts_as_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
        spool.register("s").unwrap();
        spool.begin_run().unwrap();
        spool.append_received(&records(0..6), Some(5_000)).unwrap();
        spool.ack("s", 4).unwrap();
        spool.end_run().unwrap();
    }
    std::fs::write(dir.path().join("state"), b"holdline-spool 1\nrunn").unwrap();
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert!(spool.recovered().state_lost);
    assert_eq!(spool.register("s").unwrap(), 0, "nothing is skipped");
    assert_eq!(spool.pending("s", 100).unwrap().len(), 6);
    assert_eq!(
        spool.begin_run().unwrap(),
        Some(5_000),
        "the run is not known to have ended"
    );
}

#[test]
fn group_commit_delivers_everything_handed_over_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), Durability::Immediate).unwrap());
    spool.register("s").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let commit = GroupCommit::start(spool.clone(), 256, move |last| {
        let _ = tx.send(last);
    })
    .unwrap();
    for i in 0..200 {
        commit
            .submit(&records(i * 5..i * 5 + 5), Some(u64::from(i)))
            .unwrap();
    }
    commit.flush().unwrap();
    assert_eq!(commit.queued_bytes(), 0);
    let commits: Vec<u64> = rx.try_iter().collect();
    assert_eq!(commits.last(), Some(&1000));
    assert!(commits.windows(2).all(|w| w[0] < w[1]));
    let got = spool.pending("s", 2000).unwrap();
    assert_eq!(got.len(), 1000);
    for (i, s) in got.iter().enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(s.record, format!("{{\"n\":{i}}}").into_bytes());
    }
    commit.submit(&records(0..1), Some(999)).unwrap();
    commit.finish().unwrap();
    assert_eq!(
        spool.pending("s", 2000).unwrap().len(),
        1001,
        "finish commits the rest"
    );
    drop(spool);
    let spool = Spool::open(dir.path(), Durability::Immediate).unwrap();
    assert_eq!(spool.begin_run().unwrap(), None, "no run was begun");
}

#[test]
fn passed_segments_are_written_over_and_what_they_held_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let files = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    {
        let spool = Spool::open_with(dir.path(), Durability::Immediate, 200).unwrap();
        spool.register("s").unwrap();
        for i in 0..40 {
            let last = spool.append(&records(i * 4..i * 4 + 4)).unwrap();
            spool.ack("s", last).unwrap();
        }
        // The active segment, at most two spares, the state file.
        assert!(files(dir.path()) <= 4, "{} files", files(dir.path()));
        let spares = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("spare-")
            })
            .count();
        assert!(spares >= 1, "passed segments are kept to be written over");
        spool.append(&records(500..503)).unwrap();
    }
    let spool = Spool::open_with(dir.path(), Durability::Immediate, 200).unwrap();
    assert_eq!(
        spool.recovered().torn_bytes,
        0,
        "older commits are not a torn one"
    );
    let got = spool.pending("s", 100).unwrap();
    assert_eq!(
        got.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![161, 162, 163]
    );
    assert_eq!(got[0].record, b"{\"n\":500}");
    for i in 0..10 {
        spool.append(&records(i * 4..i * 4 + 4)).unwrap();
    }
    drop(spool);
    let spool = Spool::open_with(dir.path(), Durability::Immediate, 200).unwrap();
    let got = spool.pending("s", 100).unwrap();
    assert_eq!(got.len(), 43, "only what was not acknowledged");
    assert_eq!(got.last().unwrap().seq, 203);
}

#[test]
fn a_delivery_batch_stops_at_its_byte_limit_but_always_holds_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Durability::Eventual).unwrap();
    spool.register("s").unwrap();
    spool.append(&records(0..10)).unwrap(); // 7 bytes each
    spool.append(&records(10..20)).unwrap(); // 8 bytes each
    let p = spool.pending_shared("s", 100, 40).unwrap();
    assert_eq!(
        (p.first, p.records.len()),
        (1, 3),
        "3 × (7 + 4) ≤ 40 < 4 × 11"
    );
    let p = spool.pending_shared("s", 100, 1).unwrap();
    assert_eq!(p.records.len(), 1);
    spool.ack("s", 8).unwrap();
    let p = spool.pending_shared("s", 100, 40).unwrap();
    assert_eq!(
        (p.first, p.records.len()),
        (9, 3),
        "two of the first commit, one of the next"
    );
    assert_eq!(p.records[2].as_ref(), b"{\"n\":10}");
    assert_eq!(
        spool
            .pending_shared("s", 100, usize::MAX)
            .unwrap()
            .records
            .len(),
        12
    );
}
