//! `scopegate run`: the sidecar in the foreground until SIGTERM or SIGINT; SIGHUP reloads the config.

use std::path::Path;
use std::process::ExitCode;

use super::{current_thread_runtime, init_logging, load, log_format, Cli};

pub(super) fn run(cli: &Cli, path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| cfg.log.level.clone());
    let _guard = init_logging(log_format(cli, Some(&cfg)), &level);
    let handle = match crate::server::start(cfg) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("scopegate: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scopegate: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return "signal setup failed";
        };
        loop {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                _ = int.recv() => return "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = handle.reload().await;
                }
            }
        }
    });
    tracing::info!(signal = shutdown, "shutting down");
    handle.shutdown_and_wait();
    ExitCode::SUCCESS
}
