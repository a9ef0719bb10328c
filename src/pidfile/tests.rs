use super::*;

#[test]
fn a_pid_is_a_positive_decimal_number() {
    assert_eq!(parse_pid("1234\n"), Some(1234));
    assert_eq!(parse_pid("  77 "), Some(77));
    assert_eq!(parse_pid("0"), None);
    assert_eq!(parse_pid("-1"), None);
    assert_eq!(parse_pid("12ab"), None);
    assert_eq!(parse_pid(""), None);
}

#[test]
fn a_pid_file_naming_another_program_is_not_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.pid");
    // This test process is not called nsqgate: signalling it would be the stale-file mistake.
    write(&path).unwrap();
    match signal_reload(&path) {
        Err(PidFileError::NotNsqgate { pid, .. }) => {
            assert_eq!(u32::try_from(pid).ok(), Some(std::process::id()))
        }
        other => panic!("expected NotNsqgate, got {other:?}"),
    }
    remove(&path);
    assert!(
        !path.exists(),
        "the file named this process, so it is removed"
    );
}

#[test]
fn a_missing_or_garbled_pid_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pid");
    assert!(matches!(
        signal_reload(&missing),
        Err(PidFileError::Read { .. })
    ));
    let garbled = dir.path().join("garbled.pid");
    std::fs::write(&garbled, "nsqgate\n").unwrap();
    let err = signal_reload(&garbled).unwrap_err();
    assert!(err.to_string().contains("not a process id"), "{err}");
}
