//! The admin listener from outside: a plain HTTP/1.1 GET that returns the status as well as
//! the body, and a parser of the Prometheus text format written from its description (not
//! nsqgate's encoder), so a test reads `/metrics` as Prometheus would.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `addr`: (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: every sample, and each family's `# TYPE`.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the text format; panics naming the line on anything malformed.
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with("# HELP ") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                exposition.types.insert(name.into(), kind.into());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            exposition.samples.push(parse_sample(line));
        }
        exposition
    }

    /// The sum of the samples named `name` whose labels include every pair in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// `name{a="x",b="y"} value` or `name value` (an optional timestamp after the value).
fn parse_sample(line: &str) -> Sample {
    let at = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let (name, rest) = line.split_at(at);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner, line),
        None => (BTreeMap::new(), rest),
    };
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// `a="x",b="y"}` and what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after_key) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without a quoted value in {line:?}"));
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    close = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => panic!("dangling escape in {line:?}"),
                },
                c => value.push(c),
            }
        }
        let close = close.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
        labels.insert(key.to_owned(), value);
        rest = &after_key[close + 1..];
    }
}
