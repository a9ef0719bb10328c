//! File mode tests: which modes make a secret or a decision file insecure, named by key.

use super::*;

fn file_with_mode(dir: &Path, name: &str, mode: u32, holds: Holds) -> NamedFile {
    let path = dir.join(name);
    std::fs::write(&path, "x").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    NamedFile {
        path,
        key: format!("test.{name}"),
        holds,
    }
}

#[test]
fn a_secret_readable_by_others_is_insecure_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = file_with_mode(dir.path(), "k.key", 0o644, Holds::Secret);
    let found = insecure(&[key]);
    assert_eq!(found.len(), 1);
    let text = found[0].to_string();
    assert!(text.contains("k.key: mode 0644"), "{text}");
    assert!(text.contains("read this secret (`test.k.key`)"), "{text}");
}

#[test]
fn a_decision_may_be_read_but_not_written_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let readable = file_with_mode(dir.path(), "ca.pem", 0o644, Holds::Decision);
    let writable = file_with_mode(dir.path(), "p.toml", 0o664, Holds::Decision);
    let private = file_with_mode(dir.path(), "ok.key", 0o600, Holds::Secret);
    let found = insecure(&[readable, writable, private]);
    assert_eq!(found.len(), 1);
    assert!(found[0].to_string().contains("write this file"));
}

#[test]
fn every_policy_file_in_the_folder_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    file_with_mode(dir.path(), "a.toml", 0o644, Holds::Decision);
    file_with_mode(dir.path(), "b.toml", 0o666, Holds::Decision);
    file_with_mode(dir.path(), "notes.txt", 0o666, Holds::Decision);
    let folder = NamedFile {
        path: dir.path().to_owned(),
        key: "auth.policy_dir".into(),
        holds: Holds::Decision,
    };
    let found = insecure(&[folder]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].file.path.ends_with("b.toml"));
}
