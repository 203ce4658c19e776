//! The running proxy: worker threads (one event loop each), a control thread (admin listener, JWKS
//! refresh, reloads), and the two-phase shutdown that ties them together.
//!
//! Shutdown: `draining` stops the accept loops and asks every connection to finish its in-flight
//! requests and streams (HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY); WebSocket
//! relays keep running. When everything has finished — or `drain_timeout` has passed — `stop` ends
//! whatever is left and the worker threads exit. Then the audit lines still buffered on every thread
//! are written (`audit::flush`), and the last log line counts requests and audit lines.

pub(crate) mod admin;
pub(crate) mod listener;
pub(crate) mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::runtime::Snapshot;
pub use crate::runtime::{Readiness, Shared};

/// A started proxy.
pub struct ServerHandle {
    /// The main listener's address (TCP listeners only).
    pub addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    control: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    control_rt: tokio::runtime::Handle,
    drain_timeout: Duration,
}

impl ServerHandle {
    /// Begins a graceful shutdown (same as SIGTERM).
    pub fn begin_shutdown(&self) {
        if !self.shared.draining.is_cancelled() {
            tracing::info!(
                "draining: no new connections; in-flight requests and streams may finish"
            );
            crate::metrics::get().ready.set(0);
            self.shared.tracker.close();
            self.shared.draining.cancel();
        }
    }

    /// Drains and waits for the workers, ending what is left at the drain deadline.
    pub fn shutdown_and_wait(mut self) {
        self.begin_shutdown();
        let deadline = Instant::now() + self.drain_timeout;
        let workers = std::mem::take(&mut self.workers);
        for w in workers {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !w.is_finished() {
                tracing::warn!("drain deadline passed; closing what is still open");
                self.shared.stop.cancel();
            }
            let _ = w.join();
        }
        self.shared.stop.cancel();
        if let Some((thread, tx)) = self.control.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
        // Every worker has stopped: the audit lines still in their buffers are written now, before
        // the process exits.
        match crate::audit::flush() {
            Some(audit) => tracing::info!(
                requests = crate::metrics::get().requests_total(),
                audit_lines_recorded = audit.recorded,
                audit_lines_written = audit.written,
                audit_lines_lost = audit.lost,
                "stopped"
            ),
            None => tracing::info!("stopped"),
        }
    }

    /// Reloads the config file this server was started with (same as SIGHUP), on the control thread.
    pub fn reload(&self) -> tokio::task::JoinHandle<Result<u64, String>> {
        let shared = self.shared.clone();
        self.control_rt
            .spawn(async move { reload::reload_from_file(&shared).await })
    }

    /// Waits (up to `deadline`) until the proxy is ready — the JWKS and the sign-in provider's
    /// metadata loaded, the upstream reachable — fetching now rather than waiting for the background
    /// fetch. For embedders and tests that must not send traffic before.
    pub async fn ready(&self, deadline: Duration) -> bool {
        let snap = self.shared.snapshot();
        if let Some(j) = snap.jwks() {
            j.initial_fetch(deadline).await;
        }
        if let Some(d) = snap.oidc_discovery() {
            d.initial_fetch(deadline).await;
        }
        self.shared.readiness().await.ready
    }

    pub fn control_runtime(&self) -> &tokio::runtime::Handle {
        &self.control_rt
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.workers.is_empty() || self.control.is_some() {
            self.shared.draining.cancel();
            self.shared.stop.cancel();
            if let Some((_, tx)) = self.control.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// Starts the proxy for `config`: binds, spawns workers and the control thread, and returns once
/// listening. Readiness (JWKS loaded, upstream reachable) is reported by `/readyz`.
pub fn start(config: Config) -> Result<ServerHandle, String> {
    crate::metrics::get();
    let snap = Snapshot::build(config, 1, None)?;
    let cfg = snap.config.clone();
    if snap.assertion.is_ephemeral() {
        tracing::warn!(
            kid = snap.assertion.kid(),
            "no [assertion] key configured: signing with an ephemeral key; upstreams must fetch {}",
            crate::proxy::JWKS_PATH
        );
    }
    let (bound, addr) = listener::bind(
        &cfg.server.listen,
        cfg.server.workers,
        cfg.server.unix_socket_mode,
    )
    .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
    let admin_std = match cfg.server.admin_listen {
        Some(a) => {
            let l = std::net::TcpListener::bind(a)
                .map_err(|e| format!("cannot listen on admin address {a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(l)
        }
        None => None,
    };
    let admin_addr = admin_std.as_ref().and_then(|l| l.local_addr().ok());
    let boot: [u8; 6] = crate::util::random_bytes();
    let shared = Arc::new(Shared::new(
        snap,
        boot.iter().map(|b| format!("{b:02x}")).collect(),
    ));
    crate::metrics::get().config_generation.set(1);

    // Control thread: admin listener, JWKS, reload watcher.
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("scopegate-control")
        .build()
        .map_err(|e| e.to_string())?;
    let control_handle = control_rt.handle().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let control_shared = shared.clone();
    let control_thread = std::thread::Builder::new()
        .name("scopegate-control".into())
        .spawn(move || {
            control_rt.block_on(async move {
                let shared = control_shared;
                let snap = shared.snapshot();
                if let Some(jwks) = snap.jwks().cloned() {
                    jwks.spawn_refresher(shared.draining.clone());
                    let s = shared.clone();
                    tokio::spawn(async move {
                        if !jwks.initial_fetch(Duration::from_secs(30)).await {
                            tracing::warn!(
                                url = jwks.url(),
                                "JWKS not reachable yet; retrying in the background"
                            );
                        }
                        let _ = s.readiness().await;
                    });
                }
                if let Some(d) = snap.oidc_discovery().cloned() {
                    d.spawn_refresher(shared.draining.clone());
                    let s = shared.clone();
                    tokio::spawn(async move {
                        if !d.initial_fetch(Duration::from_secs(30)).await {
                            tracing::warn!(
                                url = d.url(),
                                "OIDC provider not reachable yet; retrying in the background"
                            );
                        }
                        let _ = s.readiness().await;
                    });
                }
                if let Some(l) = admin_std {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            tokio::spawn(admin::serve(l, shared.clone()));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot start the admin listener"),
                    }
                }
                reload::spawn_file_watch(shared.clone());
                // One expiry timer for every live session, and the gateway's people writer.
                tokio::spawn(crate::proxy::revoke::run_expiry(shared.clone()));
                tokio::spawn(crate::proxy::people::run_writer(shared.clone()));
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| e.to_string())?;

    let limit = Arc::new(Semaphore::new(cfg.server.max_connections));
    let mut workers = Vec::new();
    for (i, b) in bound.into_iter().enumerate() {
        let shared = shared.clone();
        let limit = limit.clone();
        let handle = std::thread::Builder::new()
            .name(format!("scopegate-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start worker runtime");
                        return;
                    }
                };
                let proxy = Arc::new(crate::proxy::Worker::new(shared));
                rt.block_on(listener::run_worker(proxy, b, limit));
            })
            .map_err(|e| e.to_string())?;
        workers.push(handle);
    }
    crate::metrics::get().ready.set(1);
    tracing::info!(
        listen = %cfg.server.listen,
        addr = %addr.map(|a| a.to_string()).unwrap_or_else(|| cfg.server.listen.to_string()),
        admin = %admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        workers = cfg.server.workers,
        upstream = %cfg.upstream.url,
        profile = cfg.upstream.profile.name(),
        "scopegate listening"
    );
    Ok(ServerHandle {
        addr,
        admin_addr,
        shared,
        workers,
        control: Some((control_thread, stop_tx)),
        control_rt: control_handle,
        drain_timeout: cfg.server.drain_timeout,
    })
}
