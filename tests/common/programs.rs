//! Client programs and stock tools run to completion: pynsq and nsqjs from tests/clients,
//! to_nsq and nsq_tail from tools/bin.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the nsqgate binary under test with `args` (no `NSQGATE_CONFIG` from the caller's
/// environment); (exit code, stdout, stderr). For its one-shot commands: check-config,
/// certs, keys, explain.
pub fn nsqgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(args)
        .env_remove("NSQGATE_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("could not run nsqgate: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where scripts/install-clients put pynsq and nsqjs.
pub fn clients_dir() -> PathBuf {
    std::env::var_os("NSQGATE_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
}

/// Runs one client program from tests/clients; (exit ok, its JSON summary line, stderr).
pub fn run_client(
    interpreter: &str,
    script: &str,
    args: &[String],
    timeout: Duration,
) -> (bool, serde_json::Value, String) {
    let dir = clients_dir();
    let program = match interpreter {
        "python" => dir.join(".venv/bin/python"),
        _ => PathBuf::from("node"),
    };
    assert!(
        interpreter != "python" || program.is_file(),
        "{} is missing: run scripts/install-clients (scripts/test does)",
        program.display()
    );
    assert!(
        interpreter != "node" || dir.join("node_modules/nsqjs").is_dir(),
        "nsqjs is missing from {}: run scripts/install-clients",
        dir.display()
    );
    let child = Command::new(&program)
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let (ok, stdout, stderr) = wait_output(child, timeout, &program);
    let stdout = String::from_utf8_lossy(&stdout);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!("{script} printed no JSON summary; stdout: {stdout}\nstderr: {stderr}")
        });
    (ok, summary, stderr)
}

/// Runs a stock tool to completion with stdin, returning (success, stdout, stderr).
pub fn run_tool(
    program: &Path,
    args: &[String],
    stdin: &[u8],
    timeout: Duration,
) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = wait_output(child, timeout, program);
    let _ = writer.join();
    output
}

pub fn wait_output(mut child: Child, timeout: Duration, program: &Path) -> (bool, Vec<u8>, String) {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => (status.success(), stdout, stderr),
        None => panic!(
            "{} did not finish within {timeout:?}; stderr:\n{stderr}",
            program.display()
        ),
    }
}
