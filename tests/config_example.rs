//! README claim "`proxy.toml.example` documents every key": the keys serde accepts (found by
//! probing each table with an unknown key, whose error lists the accepted ones) against the keys
//! the example names, set or commented out. No processes; no parsing of the example as TOML
//! (most of it is commented out on purpose).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet};

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

/// Every table the config accepts (dotted path) with its keys, discovered from the root.
fn accepted_tables() -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(path) = todo.pop() {
        let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        let keys = accepted_keys(&segments).expect("a table");
        for key in &keys {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let child_segments: Vec<&str> = child.split('.').collect();
            if accepted_keys(&child_segments).is_some() {
                todo.push(child);
            }
        }
        tables.insert(path, keys);
    }
    tables
}

/// The keys `proxy.toml.example` documents per table (set or commented out): `[table]` and
/// `[[table]]` headers, `key = ...` lines, keys of inline tables, and of inline tables in a
/// multi-line array (`keys = [ { kid = ... }, ]`).
fn documented_tables(example: &str) -> BTreeMap<String, Vec<String>> {
    let mut tables: BTreeMap<String, Vec<String>> = Default::default();
    let add = |tables: &mut BTreeMap<String, Vec<String>>, path: &str| {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let keys = tables.entry(parent.to_owned()).or_default();
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_owned());
        }
    };
    let is_key = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let inline_keys = |text: &str| -> Vec<String> {
        let inner = text.split_once('{').map_or("", |(_, r)| r);
        let inner = inner.split_once('}').map_or(inner, |(l, _)| l);
        inner
            .split(',')
            .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.trim().to_owned()))
            .filter(|k| is_key(k))
            .collect()
    };
    let mut table = String::new();
    let mut array: Option<String> = None;
    for line in example.lines() {
        let text = line.trim().trim_start_matches('#').trim();
        let header = text
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .or_else(|| text.strip_prefix('[').and_then(|r| r.split_once(']')))
            .map(|(name, _)| name);
        if let Some(name) = header.filter(|n| n.split('.').all(is_key)) {
            table = name.to_owned();
            array = None;
            add(&mut tables, name);
            continue;
        }
        let join = |key: &str| {
            if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            }
        };
        if let Some(name) = &array {
            if text.starts_with('{') {
                for key in inline_keys(text) {
                    add(&mut tables, &format!("{}.{key}", join(name)));
                }
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
        add(&mut tables, &join(key));
        if value.starts_with('{') {
            for inner in inline_keys(value) {
                add(&mut tables, &format!("{}.{inner}", join(key)));
            }
        } else if value == "[" {
            array = Some(key.to_owned());
        }
    }
    tables
}

#[test]
fn proxy_toml_example_documents_exactly_the_keys_the_config_accepts() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example"))
            .unwrap();
    let accepted = accepted_tables();
    let documented = documented_tables(&example);
    let flat = |tables: &BTreeMap<String, Vec<String>>| {
        tables
            .iter()
            .flat_map(|(table, keys)| {
                keys.iter().map(move |key| {
                    if table.is_empty() {
                        key.clone()
                    } else {
                        format!("{table}.{key}")
                    }
                })
            })
            .collect::<BTreeSet<String>>()
    };
    let (accepted, documented) = (flat(&accepted), flat(&documented));
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
