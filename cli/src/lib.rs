//! `mota`: the command line of mota.
//!
//! A library with a thin binary (as mini-redis splits its server): the binary only calls
//! [`main`], and the library also gives tests and `mota demo` one way to run a whole
//! stack ([`demo::Stack`]). Argument parsing and dispatch live here, each command group in
//! its own module. Local commands (keys, models, deltas on files) need no backend; remote
//! ones build their client from the connection only when they run, so `mota model
//! inspect` works with no server configured.

mod client;
mod delta;
pub mod demo;
mod devices;
mod events;
mod exit;
mod keys;
mod login;
mod model;
mod output;
pub mod qemu;
mod registry;
mod rollout;
mod tokens;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Ship quantized ML models to fleets of microcontrollers.
///
/// Remote commands talk to a mota backend: --server / MOTA_SERVER and --token / MOTA_TOKEN,
/// or what `mota login` saved. `mota demo` shows the whole product on this machine.
#[derive(Parser)]
#[command(name = "mota", version, about, after_help = exit::HELP)]
struct Cli {
    #[command(flatten)]
    connection: client::Connection,
    /// Print JSON (the API's own documents) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Model versions in the backend, and .tflite files on disk (inspect, run, eval, bench).
    #[command(subcommand, alias = "models")]
    Model(model::ModelCommand),
    /// Validation sets: make from .npy, push, list.
    #[command(subcommand, alias = "valsets")]
    Valset(model::ValsetCommand),
    /// Delta patches: make and apply on files, or list a version's in the backend.
    #[command(subcommand, alias = "deltas")]
    Delta(delta::DeltaCommand),
    /// Devices: list and filter, show, update history, tags.
    #[command(subcommand, alias = "devices")]
    Device(devices::DeviceCommand),
    /// Rollouts: create (or dry-run), list, show, watch, pause, resume, approve, abort, rollback.
    #[command(subcommand, alias = "rollouts")]
    Rollout(rollout::RolloutCommand),
    /// Root and release signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// API tokens (admin).
    #[command(subcommand, alias = "tokens")]
    Token(tokens::TokenCommand),
    /// The audit log, newest first.
    Events(events::EventsArgs),
    /// Check a server and token, and save them for later commands.
    Login(login::LoginArgs),
    /// The role the token has on the server.
    Whoami,
    /// The whole product on this machine, offline: a backend, a simulated fleet, two
    /// rollouts (one good, one the devices reject).
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What every command gets besides its own arguments.
struct Ctx {
    /// Where the backend is.
    pub connection: client::Connection,
    /// `--json`.
    pub json: bool,
}

impl Ctx {
    /// A client for the configured backend.
    pub fn client(&self) -> anyhow::Result<client::Client> {
        self.connection.client()
    }
}

/// Runs the `mota` command line on the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx { connection: cli.connection, json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Model(cmd) => model::run(cmd, &ctx).await,
            Command::Valset(cmd) => model::run_valset(cmd, &ctx).await,
            Command::Delta(cmd) => delta::run(cmd, &ctx).await,
            Command::Device(cmd) => devices::run(cmd, &ctx).await,
            Command::Rollout(cmd) => rollout::run(cmd, &ctx).await,
            Command::Keys(cmd) => keys::run(cmd, &ctx).await,
            Command::Token(cmd) => tokens::run(cmd, &ctx).await,
            Command::Events(args) => events::run(args, &ctx).await,
            Command::Login(args) => login::login(args, &ctx).await,
            Command::Whoami => login::whoami(&ctx).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "mota", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::code(&err))
        }
    }
}
