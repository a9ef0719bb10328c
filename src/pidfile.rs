//! The pid file of a running nsqgate (`run --pid-file`) and `nsqgate reload`, which sends that
//! process SIGHUP: the same reload as `kill -HUP` or `systemctl reload`, without looking the
//! process up by hand. The file is written only once SIGHUP is handled (before that, the
//! signal's default action would end the process) and removed at a clean exit.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, Pid, Signal};

/// Why `reload` sent nothing.
#[derive(Debug)]
pub enum PidFileError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    NotAPid {
        path: PathBuf,
        text: String,
    },
    /// The pid names no process, or one that is not nsqgate (a stale file whose pid was reused).
    NotNsqgate {
        path: PathBuf,
        pid: i32,
    },
    Signal {
        pid: i32,
        source: std::io::Error,
    },
}

impl fmt::Display for PidFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidFileError::Read { path, source } => {
                write!(f, "cannot read the pid file {}: {source}", path.display())
            }
            PidFileError::NotAPid { path, text } => {
                write!(f, "{} holds {text:?}, not a process id", path.display())
            }
            PidFileError::NotNsqgate { path, pid } => write!(
                f,
                "{} names pid {pid}, which is not a running nsqgate (stale pid file?)",
                path.display()
            ),
            PidFileError::Signal { pid, source } => {
                write!(f, "cannot send SIGHUP to pid {pid}: {source}")
            }
        }
    }
}

impl std::error::Error for PidFileError {}

/// Writes this process's id to `path` (replacing the file whole).
pub fn write(path: &Path) -> std::io::Result<()> {
    let partial = path.with_extension("pid.partial");
    std::fs::write(&partial, format!("{}\n", std::process::id()))?;
    std::fs::rename(&partial, path)
}

/// Removes the pid file if it still names this process (a newer nsqgate that took over the
/// listeners may have written its own).
pub fn remove(path: &Path) {
    if read_pid(path).is_ok_and(|pid| u32::try_from(pid).ok() == Some(std::process::id())) {
        let _ = std::fs::remove_file(path);
    }
}

/// Sends SIGHUP to the nsqgate named by the pid file; returns its pid.
pub fn signal_reload(path: &Path) -> Result<i32, PidFileError> {
    let pid = read_pid(path)?;
    let not_nsqgate = || PidFileError::NotNsqgate {
        path: path.to_owned(),
        pid,
    };
    if !is_nsqgate(pid) {
        return Err(not_nsqgate());
    }
    let target = Pid::from_raw(pid).ok_or_else(not_nsqgate)?;
    kill_process(target, Signal::HUP).map_err(|e| PidFileError::Signal {
        pid,
        source: e.into(),
    })?;
    Ok(pid)
}

fn read_pid(path: &Path) -> Result<i32, PidFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PidFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_pid(&text).ok_or_else(|| PidFileError::NotAPid {
        path: path.to_owned(),
        text: text.chars().take(40).collect(),
    })
}

/// A positive decimal pid, surrounding whitespace allowed.
fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Whether `pid` runs the nsqgate binary (by its command name, as `pgrep` would match it).
fn is_nsqgate(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "nsqgate")
}

#[cfg(test)]
mod tests;
