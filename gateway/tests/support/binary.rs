//! The real `gateway` binary as a child process, for tests of what only a process has: signals,
//! exit codes, its listening socket, its logs.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills the child if the test ends without it having exited.
pub struct ChildGuard {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

#[allow(dead_code)]
impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (`kill -s NAME`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {name}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the binary with `args` (and `RUST_LOG=info`, no `GATEWAY_*` variables from this
/// environment) and returns it with the URL of its first stdout line ("gateway listening on URL").
pub async fn start(args: &[&str]) -> (ChildGuard, String) {
    start_with_env(args, &[("RUST_LOG", "info")]).await
}

pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> (ChildGuard, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEWAY_") {
            command.env_remove(name);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start the gateway binary");
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let collected = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            collected
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let guard = ChildGuard { child, stderr };
    let (line_tx, line_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = line_tx.send(first);
        // Keep draining stdout so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line_rx)
        .await
        .expect("the binary printed its address in time")
        .unwrap()
        .unwrap_or_else(|| panic!("no stdout line; stderr:\n{}", guard.stderr()));
    let url = line
        .strip_prefix("gateway listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (guard, url)
}
