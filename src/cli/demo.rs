//! `scopegate demo`: a gateway look-alike with scopegate in front (`src/demo.rs`), running until
//! SIGTERM or SIGINT, with the tokens and `curl` lines to paste.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::{current_thread_runtime, init_logging, log_format, Cli};

pub(super) fn demo(cli: &Cli, listen: SocketAddr) -> ExitCode {
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| "warn,scopegate::audit=info".into());
    let _guard = init_logging(log_format(cli, None), &level);
    let demo = match crate::demo::start(listen) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("scopegate demo: {e}");
            return ExitCode::from(1);
        }
    };
    // The URL is printed once it works: the sign-in provider's metadata is fetched first.
    let ready = demo
        .proxy
        .control_runtime()
        .block_on(demo.proxy.ready(std::time::Duration::from_secs(10)));
    if !ready {
        eprintln!(
            "scopegate demo: not ready after 10 s; the first requests may be refused with 503"
        );
    }
    println!("{}", demo.instructions());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(1),
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    });
    demo.stop();
    ExitCode::SUCCESS
}
