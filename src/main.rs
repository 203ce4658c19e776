//! The `scopegate` binary: see `scopegate --help` and the README.

use clap::Parser;

// A proxy allocates and frees many small, short-lived buffers per request on every worker thread;
// mimalloc's per-thread free lists make that markedly cheaper than glibc malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // mimalloc asks for transparent huge pages on its arenas, so each worker thread's first segment
    // becomes a resident 2 MiB page: most of an idle sidecar's RSS. A sidecar wants a small footprint
    // more than fewer TLB misses, so THP is turned off for this process before any thread starts.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    scopegate::cli::main(scopegate::cli::Cli::parse())
}
