//! README claim "`proxy.toml.example` documents every key": the keys serde accepts (found by
//! probing each table with an unknown key, whose error lists the accepted ones) against the keys
//! the example names, set or commented out. No processes; no parsing of the example as TOML
//! (most of it is commented out on purpose).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeSet;

const PROBE: &str = "zz_probe";

/// The smallest config serde takes (required keys only), to put probes into.
fn base_config() -> toml::Table {
    toml::from_str(
        "[client]\nlisten = \"a\"\ntls_cert = \"c\"\ntls_key = \"k\"\n\
         [upstream]\nnsqd_tcp_address = \"n\"\n",
    )
    .unwrap()
}

/// Puts `leaf` at `path` (dotted) into `table`, merging with tables already there.
fn put(table: &mut toml::Table, path: &[&str], leaf: toml::Value) {
    match path {
        [] => unreachable!("a path has at least one key"),
        [last] => {
            table.insert((*last).to_owned(), leaf);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry((*first).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let inner = match entry {
                toml::Value::Table(inner) => inner,
                toml::Value::Array(items) => match items.first_mut() {
                    Some(toml::Value::Table(inner)) => inner,
                    _ => unreachable!("probed arrays hold one table"),
                },
                _ => unreachable!("probed paths go through tables"),
            };
            put(inner, rest, leaf);
        }
    }
}

/// The keys serde accepts in the table at `path` (an unknown key's error lists them), or None
/// when `path` is no table. Array-of-tables paths (`[[nodes]]`) are probed through one element.
fn accepted_keys(path: &[&str]) -> Option<Vec<String>> {
    let probe = || toml::Value::Table(toml::Table::from_iter([(PROBE.to_owned(), 1.into())]));
    let shapes = if path.is_empty() {
        vec![None]
    } else {
        vec![Some(probe()), Some(toml::Value::Array(vec![probe()]))]
    };
    for shape in shapes {
        let mut config = base_config();
        match shape {
            None => {
                config.insert(PROBE.to_owned(), 1.into());
            }
            Some(value) => put(&mut config, path, value),
        }
        let text = toml::to_string(&config).unwrap();
        let error = match toml::from_str::<nsqgate::config::RawConfig>(&text) {
            Ok(_) => panic!("{path:?}: an unknown key was accepted"),
            Err(e) => e.message().to_owned(),
        };
        let Some(list) = error.strip_prefix(&format!("unknown field `{PROBE}`, ")) else {
            continue;
        };
        let names = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        return Some(names);
    }
    None
}

/// Every key the config accepts, as a dotted path (tables included), discovered from the root.
fn accepted_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut todo = vec![String::new()];
    while let Some(table) = todo.pop() {
        let segments: Vec<&str> = table.split('.').filter(|s| !s.is_empty()).collect();
        for key in accepted_keys(&segments).expect("a table") {
            let path = join(&table, &key);
            let path_segments: Vec<&str> = path.split('.').collect();
            if accepted_keys(&path_segments).is_some() {
                todo.push(path.clone());
            }
            paths.insert(path);
        }
    }
    paths
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

fn is_key(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `a.b` of a `[a.b]` or `[[a.b]]` header line.
fn header(text: &str) -> Option<&str> {
    text.strip_prefix("[[")
        .and_then(|rest| rest.split_once("]]"))
        .or_else(|| text.strip_prefix('[').and_then(|rest| rest.split_once(']')))
        .map(|(name, _)| name)
        .filter(|name| name.split('.').all(is_key))
}

/// The keys of the first inline table in `text` (`{ a = 1, b = "x" }`).
fn inline_keys(text: &str) -> Vec<String> {
    let inner = text.split_once('{').map_or("", |(_, rest)| rest);
    let inner = inner.split_once('}').map_or(inner, |(keys, _)| keys);
    inner
        .split(',')
        .filter_map(|pair| pair.split_once('=').map(|(key, _)| key.trim().to_owned()))
        .filter(|key| is_key(key))
        .collect()
}

/// The keys `proxy.toml.example` documents, set or commented out, as dotted paths: `[table]`
/// and `[[table]]` headers (and their parents), `key = ...` lines, keys of inline tables, and
/// of inline tables in a multi-line array (`keys = [ { kid = ... }, ]`).
fn documented_paths(example: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut table = String::new();
    // The key of a multi-line array of inline tables being read.
    let mut array: Option<String> = None;
    for line in example.lines() {
        let text = line.trim().trim_start_matches('#').trim();
        if let Some(name) = header(text) {
            let mut prefix = String::new();
            for segment in name.split('.') {
                prefix = join(&prefix, segment);
                paths.insert(prefix.clone());
            }
            table = name.to_owned();
            array = None;
            continue;
        }
        if let Some(key) = &array {
            if text.starts_with('{') {
                let path = join(&table, key);
                paths.extend(inline_keys(text).iter().map(|inner| join(&path, inner)));
                continue;
            }
            if text.starts_with(']') {
                array = None;
                continue;
            }
        }
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if !is_key(key) {
            continue;
        }
        let path = join(&table, key);
        if value.starts_with('{') {
            paths.extend(inline_keys(value).iter().map(|inner| join(&path, inner)));
        } else if value == "[" {
            array = Some(key.to_owned());
        }
        paths.insert(path);
    }
    paths
}

#[test]
fn proxy_toml_example_documents_exactly_the_keys_the_config_accepts() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example"))
            .unwrap();
    let accepted = accepted_paths();
    let documented = documented_paths(&example);
    assert!(
        accepted.len() > 80,
        "the probe found too little: {accepted:?}"
    );
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "accepted but not in proxy.toml.example: {undocumented:?}\n\
         in proxy.toml.example but not accepted: {unknown:?}"
    );
}
