//! Hot reload: SIGHUP or a change to the config file (or a file it names: keys, certificates) reloads
//! atomically. A config that fails validation is refused with a log line and a metric; the old one keeps
//! serving. In-flight requests and open streams keep the snapshot they started with, and every live
//! WebSocket is judged again under the new one: one whose credential, peer trust or scopes the new
//! config withdraws is closed (`proxy::revoke`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::server::Shared;

/// Re-reads the config file the running snapshot came from and installs it.
pub async fn reload_from_file(shared: &Arc<Shared>) -> Result<u64, String> {
    let current = shared.snapshot();
    let Some(path) = current.config.source.clone() else {
        crate::metrics::reload("skipped");
        return Err("this configuration was not loaded from a file".into());
    };
    drop(current);
    let result = match tokio::task::spawn_blocking(move || Config::load(&path)).await {
        Ok(Ok(cfg)) => shared.install(cfg).await,
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("reload task failed: {e}")),
    };
    match &result {
        Ok(generation) => {
            crate::proxy::revoke::redecide(shared);
            crate::proxy::people::preprovision_named(shared);
            crate::metrics::reload("ok");
            tracing::info!(generation, "configuration reloaded");
        }
        Err(e) => {
            crate::metrics::reload("error");
            tracing::error!(error = %e, "configuration reload refused; the previous configuration keeps serving");
        }
    }
    result
}

/// Files whose change should trigger a reload: the config and the files it references.
fn watched_files(cfg: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = &cfg.source {
        out.push(p.clone());
    }
    if let Some(t) = &cfg.server.tls {
        out.push(t.cert_file.clone());
        out.push(t.key_file.clone());
    }
    out
}

/// Watches the config's directory (so editors' rename-into-place and Kubernetes ConfigMap symlink swaps
/// are seen) and reloads after changes settle.
pub fn spawn_file_watch(shared: Arc<Shared>) {
    use notify::{RecursiveMode, Watcher};
    let files = watched_files(&shared.snapshot().config);
    if files.is_empty() {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                let relevant = ev.paths.iter().any(|p| {
                    targets.iter().any(|t| t == p)
                        || p.file_name()
                            .is_some_and(|n| names.iter().any(|x| x == n) || n == "..data")
                });
                if relevant && !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                return;
            }
        };
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|p| {
            p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
        }
    }
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                r = rx.recv() => if r.is_none() { return },
                _ = shared.draining.cancelled() => return,
            }
            // Let a burst of writes settle (editors write, rename, chmod).
            tokio::time::sleep(Duration::from_millis(250)).await;
            while rx.try_recv().is_ok() {}
            let _ = reload_from_file(&shared).await;
        }
    });
}
