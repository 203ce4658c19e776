//! The `scopegate` binary: see `scopegate --help` and the README.

use clap::Parser;

// A proxy allocates and frees many small, short-lived buffers per request on every worker thread;
// mimalloc's per-thread free lists make that markedly cheaper than glibc malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    scopegate::cli::main(scopegate::cli::Cli::parse())
}
