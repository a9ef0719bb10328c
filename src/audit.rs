//! The audit trail: one structured event per decision that matters (authentication, every
//! deny, the first allow per topic per connection, revocations), on its own tracing target so
//! it can go to its own file as JSON lines. Secrets never appear here, only fingerprints.
//! A line that cannot be written is reported and counted (and, with `on_failure = "refuse"`,
//! the decision is refused); identical refusals from one source are folded into one line with
//! a count per interval, so a flood of failures cannot flood the file.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Principal;
use crate::policy::{Action, Decision};

/// The tracing target audit events use; `main` routes it to the audit sink.
pub const TARGET: &str = "audit";

/// How often a failing audit log is reported on stderr.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Most sources whose refusals are being folded at once; beyond, lines are written unfolded.
const MAX_FOLDED: usize = 10_000;

// Process-wide like the tracing subscriber that writes the lines (set once at start-up).
static REFUSE_UNRECORDED: AtomicBool = AtomicBool::new(false);
static FOLD_MS: AtomicU64 = AtomicU64::new(0);
static FOLDED: Mutex<Option<HashMap<Line, Window>>> = Mutex::new(None);
static LAST_FAILURE_REPORT: Mutex<Option<Instant>> = Mutex::new(None);

/// What to do with a decision whose audit line cannot be written (`[audit] on_failure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Report and count the failure; the decision stands.
    #[default]
    Log,
    /// Report and count it, and refuse the decision (AUTH fails, the command is refused).
    Refuse,
}

/// Whether an audit line reached the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Written (or folded into a count that will be).
    Written,
    /// The write failed; it was reported and counted.
    Lost,
}

impl Recorded {
    /// True when the decision must not take effect: its line was lost and the configuration
    /// says decisions that cannot be recorded are refused.
    pub fn refuse(self) -> bool {
        self == Recorded::Lost && REFUSE_UNRECORDED.load(Ordering::Relaxed)
    }
}

/// Sets how write failures are handled and the folding interval (None: never fold).
pub fn configure(on_failure: OnFailure, fold: Option<Duration>) {
    REFUSE_UNRECORDED.store(on_failure == OnFailure::Refuse, Ordering::Relaxed);
    let ms = fold.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    FOLD_MS.store(ms, Ordering::Relaxed);
}

/// Audit lines lost to write failures since start, for `/metrics`.
pub fn write_failures() -> u64 {
    crate::logging::sink::failures()
}

/// One audit record. Absent fields are logged as empty strings so every line has every key.
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub remote: Option<SocketAddr>,
    pub principal: Option<&'a Principal>,
    /// `auth`, `publish`, `subscribe`, `admin`, `revoke`, ...
    pub action: &'a str,
    pub topic: Option<&'a str>,
    pub channel: Option<&'a str>,
    /// The policy rule that decided, when one did.
    pub rule: Option<&'a str>,
    /// `allow`, `deny`, `would_allow`, `would_deny`, `success`, `failure`, `closed`.
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    /// SHA-256 prefix of a presented secret, to correlate failures without revealing it.
    pub fingerprint: Option<&'a str>,
    /// The authentication method when there is no principal yet (a failed AUTH).
    pub method: Option<&'a str>,
}

/// Writes one audit line, unless it repeats a refusal already written in this interval (then
/// it is counted, and the count is written when the interval ends: see [`flush_folded`]).
pub fn record(event: &Event<'_>) -> Recorded {
    let line = Line::of(event);
    if let Some(fold) = fold_interval().filter(|_| line.is_refusal()) {
        let mut folded = match FOLDED.lock() {
            Ok(folded) => folded,
            Err(poisoned) => poisoned.into_inner(),
        };
        let windows = folded.get_or_insert_with(HashMap::new);
        if let Some(window) = windows.get_mut(&line) {
            if window.started.elapsed() < fold {
                window.repeats += 1;
                return Recorded::Written;
            }
        }
        if windows.len() < MAX_FOLDED || windows.contains_key(&line) {
            // A window that ended with repeats is flushed by the ticker; start a new one.
            if let Some((first, ended)) = windows.remove_entry(&line) {
                if ended.repeats > 0 {
                    write(&first, ended.repeats);
                }
            }
            let window = Window {
                started: Instant::now(),
                repeats: 0,
            };
            windows.insert(line.clone(), window);
        }
    }
    write(&line, 0)
}

/// Writes the counts of refusals folded in windows that have ended. Called every interval.
pub fn flush_folded() {
    let Some(fold) = fold_interval() else {
        return;
    };
    let ended: Vec<(Line, Window)> = {
        let mut folded = match FOLDED.lock() {
            Ok(folded) => folded,
            Err(poisoned) => poisoned.into_inner(),
        };
        let windows = folded.get_or_insert_with(HashMap::new);
        let keys: Vec<Line> = windows
            .iter()
            .filter(|(_, w)| w.started.elapsed() >= fold)
            .map(|(line, _)| line.clone())
            .collect();
        keys.into_iter()
            .filter_map(|line| windows.remove_entry(&line))
            .collect()
    };
    for (line, window) in ended {
        if window.repeats > 0 {
            write(&line, window.repeats);
        }
    }
}

fn fold_interval() -> Option<Duration> {
    match FOLD_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// One audit line's fields, owned; equal lines are "identical" for folding: all fields but
/// the source port (a client reconnecting to retry the same credential is one source
/// repeating one refusal; a different credential, by its fingerprint, is a new line).
#[derive(Clone, Debug)]
struct Line {
    source: Option<IpAddr>,
    remote: String,
    identity: String,
    method: String,
    action: String,
    topic: String,
    channel: String,
    rule: String,
    outcome: String,
    reason: String,
    fingerprint: String,
}

/// Refusals of one kind from one source within the current interval.
struct Window {
    started: Instant,
    /// Refusals after the first (which was written) in this window.
    repeats: u64,
}

impl Line {
    fn of(event: &Event<'_>) -> Line {
        let method = event
            .principal
            .map(|p| p.method.to_string())
            .or(event.method.map(str::to_owned))
            .unwrap_or_default();
        Line {
            source: event.remote.map(|r| r.ip()),
            remote: event.remote.map(|r| r.to_string()).unwrap_or_default(),
            identity: event
                .principal
                .map(|p| p.identity.clone())
                .unwrap_or_default(),
            method,
            action: event.action.to_owned(),
            topic: event.topic.unwrap_or("").to_owned(),
            channel: event.channel.unwrap_or("").to_owned(),
            rule: event.rule.unwrap_or("").to_owned(),
            outcome: event.outcome.to_owned(),
            reason: event.reason.unwrap_or("").to_owned(),
            fingerprint: event.fingerprint.unwrap_or("").to_owned(),
        }
    }

    fn is_refusal(&self) -> bool {
        matches!(self.outcome.as_str(), "deny" | "failure" | "would_deny")
    }
}

impl Line {
    /// Everything but the source port.
    fn key(&self) -> impl PartialEq + std::hash::Hash + '_ {
        let who = (self.source, &self.identity, &self.method, &self.fingerprint);
        let what = (&self.action, &self.topic, &self.channel, &self.rule);
        (who, what, &self.outcome, &self.reason)
    }
}

impl std::hash::Hash for Line {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Eq for Line {}

impl PartialEq for Line {
    fn eq(&self, other: &Line) -> bool {
        self.key() == other.key()
    }
}

/// Emits the line; `repeats` > 0 marks a summary of that many more identical refusals. A
/// refusal or failure is a warning, so it stands out from the allows around it.
fn write(line: &Line, repeats: u64) -> Recorded {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                remote = %line.remote,
                identity = %line.identity,
                method = %line.method,
                action = %line.action,
                topic = %line.topic,
                channel = %line.channel,
                rule = %line.rule,
                outcome = %line.outcome,
                reason = %line.reason,
                fingerprint = %line.fingerprint,
                repeats,
                "audit"
            )
        };
    }
    if line.is_refusal() || line.outcome == "closed" {
        emit!(tracing::Level::WARN);
    } else {
        emit!(tracing::Level::INFO);
    }
    match crate::logging::sink::take_failure() {
        None => Recorded::Written,
        Some(error) => {
            report_failure(&error);
            Recorded::Lost
        }
    }
}

/// Says on the operational log (stderr) that audit lines are being lost, at most once per
/// interval: a full disk must not flood the other log either.
fn report_failure(error: &std::io::Error) {
    let mut last = match LAST_FAILURE_REPORT.lock() {
        Ok(last) => last,
        Err(poisoned) => poisoned.into_inner(),
    };
    if last.is_some_and(|at| at.elapsed() < FAILURE_REPORT_INTERVAL) {
        return;
    }
    *last = Some(Instant::now());
    let refusing = REFUSE_UNRECORDED.load(Ordering::Relaxed);
    tracing::error!(
        %error,
        lost_total = write_failures(),
        refusing_decisions = refusing,
        "audit log write failed: decisions are not being recorded"
    );
}

/// Records a policy decision: `would` marks what audit-mode rules would have decided.
pub fn record_decision(
    remote: SocketAddr,
    principal: &Principal,
    action: Action,
    topic: &str,
    channel: Option<&str>,
    decision: &Decision,
    would: bool,
) -> Recorded {
    let outcome = match (decision.is_allow(), would) {
        (true, false) => "allow",
        (false, false) => "deny",
        (true, true) => "would_allow",
        (false, true) => "would_deny",
    };
    let reason = match decision {
        Decision::Deny { reason, .. } => Some(reason.as_str()),
        Decision::Allow { .. } => None,
    };
    record(&Event {
        remote: Some(remote),
        principal: Some(principal),
        action: action.as_str(),
        topic: Some(topic),
        channel,
        rule: decision.rule(),
        outcome,
        reason,
        ..Event::default()
    })
}
