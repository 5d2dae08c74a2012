use std::time::Duration;

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
        FileConfig::from_parts(dir.path().join("out/events.jsonl").to_str().unwrap(), &[]).unwrap();
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

#[test]
fn a_fenced_file_refuses_a_writer_with_an_older_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let config = FileConfig::from_parts(path.to_str().unwrap(), &[]).unwrap();
    let fence = |token| crate::Fence {
        key: "deliver.test".into(),
        token,
    };
    let batch = |from: usize| -> Vec<Vec<u8>> { (from..from + 3).map(record).collect() };
    let write = |sink: &mut FileSink, from| {
        let b = batch(from);
        let refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
        sink.deliver(&refs)
    };
    let mut old = FileSink::open(config.clone()).unwrap();
    let mut new = FileSink::open(config).unwrap();
    old.fence(&fence(3));
    write(&mut old, 0).unwrap();
    new.fence(&fence(8));
    write(&mut new, 3).unwrap();
    match write(&mut old, 6) {
        Err(SinkError::Fenced { detail, .. }) => assert!(detail.contains("token 8"), "{detail}"),
        other => panic!("the old writer was not fenced off: {other:?}"),
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().count(),
        6,
        "nothing of the refused batch: {text}"
    );
    let fence_file = fence_path(&path, "deliver.test");
    let token = |f: &Path| -> u64 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    assert_eq!(token(&fence_file), 8);
    new.fence(&fence(9));
    write(&mut new, 9).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 9);
    // Unfenced, the sink writes as before and leaves the fence alone.
    let mut plain =
        FileSink::open(FileConfig::from_parts(path.to_str().unwrap(), &[]).unwrap()).unwrap();
    write(&mut plain, 12).unwrap();
    assert_eq!(token(&fence_file), 9);
    // Another delivery's token is its own.
    old.fence(&crate::Fence {
        key: "deliver.other".into(),
        token: 2,
    });
    write(&mut old, 15).unwrap();
    assert_eq!(token(&fence_path(&path, "deliver.other")), 2);
}
