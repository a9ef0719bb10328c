//! nsqd's `/stats`, cut down to what one caller may see, and its text form rendered from the
//! JSON form in nsqd's layout (nsqgate always asks nsqd for JSON). No I/O here; the clock is
//! passed in.
//!
//! A topic stays when the caller may see it ([`Access::topic_visible`]); of its channels, only
//! those it may subscribe to or administer. A channel's clients (host names, client ids, user
//! agents, addresses, what they published) stay only for an admin of that topic and channel.
//! The connection-level `producers` list stays only for an admin on `*`. Every client's
//! `pub_counts` keeps only topics the caller may see.

use std::fmt::Write as _;

use serde_json::Value;

use crate::http::access::Access;
use crate::policy::Action;

/// Removes every topic, channel and producer the caller may not see.
pub fn filter(stats: &mut Value, access: &Access<'_>) {
    if let Some(topics) = stats.get_mut("topics").and_then(Value::as_array_mut) {
        topics.retain_mut(|topic| {
            let name = topic["topic_name"].as_str().unwrap_or("").to_owned();
            let channels: Vec<String> = channel_names(topic);
            if !access.topic_visible(&name, channels.iter().map(String::as_str)) {
                return false;
            }
            if let Some(list) = topic.get_mut("channels").and_then(Value::as_array_mut) {
                list.retain_mut(|channel| {
                    let channel_name = channel["channel_name"].as_str().unwrap_or("").to_owned();
                    if !access.channel_visible(&name, &channel_name) {
                        return false;
                    }
                    filter_clients(channel, access, &name, &channel_name);
                    true
                });
            }
            true
        });
    }
    if let Some(producers) = stats.get_mut("producers").and_then(Value::as_array_mut) {
        if access.global_admin() {
            producers
                .iter_mut()
                .for_each(|p| filter_pub_counts(p, access));
        } else {
            producers.clear();
        }
    }
}

/// A channel's connected clients (host names, client ids, user agents, addresses) are shown
/// only to an admin of that topic and channel; what each has published only for topics the
/// caller may see.
fn filter_clients(channel: &mut Value, access: &Access<'_>, topic: &str, name: &str) {
    let Some(clients) = channel.get_mut("clients").and_then(Value::as_array_mut) else {
        return;
    };
    if access.may(Action::Admin, topic, Some(name)) {
        clients
            .iter_mut()
            .for_each(|c| filter_pub_counts(c, access));
    } else {
        clients.clear();
    }
}

/// A client's `pub_counts`, cut to the topics the caller may see.
fn filter_pub_counts(client: &mut Value, access: &Access<'_>) {
    if let Some(counts) = client.get_mut("pub_counts").and_then(Value::as_array_mut) {
        counts.retain(|count| access.topic_visible(count["topic"].as_str().unwrap_or(""), []));
    }
}

fn channel_names(topic: &Value) -> Vec<String> {
    topic["channels"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["channel_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// nsqd's text `/stats` layout, from its JSON; `now` is Unix seconds.
pub fn render_text(stats: &Value, now: i64) -> String {
    let mut w = String::new();
    let start = stats["start_time"].as_i64().unwrap_or(0);
    let _ = writeln!(w, "nsqd v{} (through nsqgate)", text(&stats["version"]));
    let _ = writeln!(w, "start_time {}", rfc3339(start));
    let _ = writeln!(w, "uptime {}", duration((now - start).max(0)));
    let _ = writeln!(w, "\nHealth: {}", text(&stats["health"]));
    if let Some(memory) = stats["memory"].as_object() {
        let _ = writeln!(w, "\nMemory:");
        for (key, value) in memory {
            let _ = writeln!(w, "   {key:<25}\t{value}");
        }
    }
    let topics = stats["topics"].as_array().cloned().unwrap_or_default();
    if topics.is_empty() {
        let _ = writeln!(w, "\nTopics: None");
    } else {
        let _ = write!(w, "\nTopics:");
    }
    for topic in &topics {
        let _ = writeln!(
            w,
            "\n{}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            if flag(&topic["paused"]) { "*P " } else { "   " },
            text(&topic["topic_name"]),
            num(&topic["depth"]),
            num(&topic["backend_depth"]),
            num(&topic["message_count"]),
            percentiles(&topic["e2e_processing_latency"]),
        );
        for channel in topic["channels"].as_array().into_iter().flatten() {
            let _ = writeln!(
                w,
                "{}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                if flag(&channel["paused"]) { "   *P " } else { "      " },
                text(&channel["channel_name"]),
                num(&channel["depth"]),
                num(&channel["backend_depth"]),
                num(&channel["in_flight_count"]),
                num(&channel["deferred_count"]),
                num(&channel["requeue_count"]),
                num(&channel["timeout_count"]),
                num(&channel["message_count"]),
                percentiles(&channel["e2e_processing_latency"]),
            );
            for client in channel["clients"].as_array().into_iter().flatten() {
                let _ = writeln!(w, "        {}", client_line(client, now));
            }
        }
    }
    let producers = stats["producers"].as_array().cloned().unwrap_or_default();
    if producers.is_empty() {
        let _ = writeln!(w, "\nProducers: None");
    } else {
        let _ = writeln!(w, "\nProducers:");
        for producer in &producers {
            let _ = writeln!(w, "   {}", client_line(producer, now));
        }
    }
    w
}

fn client_line(client: &Value, now: i64) -> String {
    let port = text(&client["remote_address"])
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .unwrap_or_default();
    let id = format!(
        "{}:{} {}",
        text(&client["hostname"]),
        port,
        text(&client["user_agent"])
    );
    let connected = duration((now - client["connect_ts"].as_i64().unwrap_or(now)).max(0));
    let version = text(&client["version"]);
    match client["pub_counts"].as_array().filter(|c| !c.is_empty()) {
        Some(counts) => {
            let total: u64 = counts.iter().filter_map(|c| c["count"].as_u64()).sum();
            let topics: Vec<String> = counts
                .iter()
                .map(|c| format!("{}={}", text(&c["topic"]), num(&c["count"])))
                .collect();
            format!(
                "[{version} {id:<21}] msgs: {total:<8} topics: {} connected: {connected}",
                topics.join(",")
            )
        }
        None => format!(
            "[{version} {id:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {connected}",
            num(&client["state"]),
            num(&client["in_flight_count"]),
            num(&client["ready_count"]),
            num(&client["finish_count"]),
            num(&client["requeue_count"]),
            num(&client["message_count"]),
        ),
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

fn num(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "0".to_owned(),
    }
}

fn flag(value: &Value) -> bool {
    value.as_bool().unwrap_or(false)
}

/// nsqd prints each percentile's value in human units, comma-separated.
fn percentiles(latency: &Value) -> String {
    latency["percentiles"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| p["value"].as_f64())
                .map(human_nanos)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn human_nanos(nanos: f64) -> String {
    match nanos {
        n if n >= 1e9 => format!("{:.1}s", n / 1e9),
        n if n >= 1e6 => format!("{:.1}ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1}us", n / 1e3),
        n => format!("{n:.1}ns"),
    }
}

/// Go's `time.Duration` form for whole seconds: `1h2m3s`, `4m0s`, `5s`.
fn duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC), by the civil-from-days algorithm.
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
