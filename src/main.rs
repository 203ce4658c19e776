//! The `scopegate` binary: see `scopegate --help` and the README.

use clap::Parser;

fn main() -> std::process::ExitCode {
    scopegate::cli::main(scopegate::cli::Cli::parse())
}
