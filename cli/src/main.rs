//! `mota`: the command line of mota.
//!
//! Thin by design: argument parsing and dispatch live here, each command group in its
//! own module, and everything a command needs beyond files and printing comes from the
//! library crates.

mod keys;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ship quantized ML models to fleets of microcontrollers.
#[derive(Parser)]
#[command(name = "mota", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Root and release signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
