//! The `alexnet` command line: parses arguments and calls into the library, one subcommand each
//! (the parser and the subcommands are in `cli`).

mod cli;

use std::process::ExitCode;

use alexnet::graph::runtime;
use clap::Parser;

fn main() -> ExitCode {
    cli::early::restore_stderr();
    // Before clap: the check must run before anything else, and `--verbose` may follow a subcommand.
    runtime::quiet_tensorflow_logs(std::env::args_os().any(|a| a == "--verbose"));
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
