//! `mota`: the command line of mota.
//!
//! Thin by design: argument parsing and dispatch live here, each command group in its
//! own module, and everything a command needs beyond files and printing comes from the
//! library crates.

mod delta;
mod keys;
mod model;

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
    /// Inspect, run, evaluate and time .tflite models with the device runtime.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Validation sets.
    #[command(subcommand)]
    Valset(model::ValsetCommand),
    /// Delta patches between model versions.
    #[command(subcommand)]
    Delta(delta::DeltaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Valset(cmd) => model::run_valset(cmd),
        Command::Delta(cmd) => delta::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
