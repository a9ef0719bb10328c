//! Audit sink tests: failed writes counted and reported, reopen after a rename.

use super::*;

#[test]
fn a_failed_write_is_counted_and_told_to_the_writing_thread() {
    let sink = AuditSink::open(Some(Path::new("/dev/full"))).unwrap();
    let before = failures();
    assert!(SinkWriter(sink.clone()).write(b"line\n").is_err());
    assert!(failures() > before);
    let failure = take_failure().unwrap();
    assert!(failure.to_string().contains("space"), "{failure}");
    assert!(take_failure().is_none(), "taken once");
}

#[test]
fn reopen_follows_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = AuditSink::open(Some(&path)).unwrap();
    SinkWriter(sink.clone()).write_all(b"one\n").unwrap();
    std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
    sink.reopen().unwrap();
    SinkWriter(sink).write_all(b"two\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    let old = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
    assert_eq!(old, "one\n");
}
