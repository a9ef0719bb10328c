//! Escaping tests: control characters become visible escapes, plain text is unchanged.

use super::escape;

#[test]
fn control_characters_become_visible_escapes() {
    assert_eq!(
        escape("a\x1b[31mred\r\nfake line\0\x07\x7f"),
        "a\\x1b[31mred\\r\\nfake line\\0\\x07\\x7f"
    );
    assert_eq!(escape("csi\u{9b}2J"), "csi\\u{9b}2J");
    assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
}

#[test]
fn ordinary_text_is_unchanged() {
    let text = "topic=orders.eu channel \"c\" 127.0.0.1:4150 ünïcode ✓ \\x1b";
    assert_eq!(escape(text), text);
}
