//! scopegate under test: in-process (fast, inspectable) or as the real binary in a child process (for
//! signals, memory and logs). Both take TOML text; `{dir}` in it is replaced by the test's temp dir.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scopegate::config::Config;
use scopegate::server::ServerHandle;

pub struct TestProxy {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Rewrites the config file and reloads (as SIGHUP would), returning the result.
    pub async fn reload_with(&self, toml: &str) -> Result<u64, String> {
        std::fs::write(
            &self.config_path,
            toml.replace("{dir}", &self.dir.path().display().to_string()),
        )
        .unwrap();
        self.handle.reload().await.unwrap()
    }
}

/// Starts scopegate in this process. The config's `listen` should be `127.0.0.1:0`.
pub fn start(toml: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, toml)
}

/// Like [`start`], with a temp dir the caller already filled (key files, …).
pub fn start_in(dir: tempfile::TempDir, toml: &str) -> TestProxy {
    super::logs();
    let text = toml.replace("{dir}", &dir.path().display().to_string());
    let config_path = dir.path().join("scopegate.toml");
    std::fs::write(&config_path, &text).unwrap();
    let cfg = Config::load(&config_path)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"));
    let handle = scopegate::server::start(cfg).unwrap();
    let addr = handle.addr.expect("tests listen on TCP");
    TestProxy {
        handle,
        addr,
        dir,
        config_path,
    }
}

/// The minimal config header for an upstream: listen on a free port, forward to `upstream`.
pub fn base(upstream: &str, profile: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[upstream]\nurl = \"{upstream}\"\nprofile = \"{profile}\"\n"
    )
}

/// scopegate as a child process of the real binary.
pub struct ChildProxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// Every stderr line (JSON logs), collected by a background thread.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Told when stderr has ended (the process and everything it wrote are gone).
    logs_closed: std::sync::mpsc::Receiver<()>,
}

impl ChildProxy {
    pub fn start(toml: &str) -> ChildProxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, toml)
    }

    pub fn start_in(dir: tempfile::TempDir, toml: &str) -> ChildProxy {
        let text = toml.replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("scopegate.toml");
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_scopegate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, Option<SocketAddr>)>();
        let sink = logs.clone();
        let (closed_tx, logs_closed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = &tx {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "scopegate listening" {
                            let addr = v["addr"].as_str().and_then(|a| a.parse().ok());
                            let admin = v["admin"].as_str().and_then(|a| a.parse().ok());
                            if let Some(addr) = addr {
                                let _ = t.send((addr, admin));
                                tx = None;
                            }
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
            let _ = closed_tx.send(());
        });
        // The readiness signal is the "listening" log line, written after the socket is bound.
        let (addr, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "scopegate did not start:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        ChildProxy {
            child,
            addr,
            admin,
            dir,
            logs,
            logs_closed,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits (bounded) until stderr has ended, so that [`log_lines`](Self::log_lines) holds every line
    /// the process wrote. Call after the process has exited.
    pub fn wait_logs_closed(&self, limit: Duration) -> bool {
        !matches!(
            self.logs_closed.recv_timeout(limit),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
