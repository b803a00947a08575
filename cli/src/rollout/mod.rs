//! `mota rollout`: create (from flags, a plan file, or both), preview, list, show, watch,
//! and the operator's actions.
//!
//! Plans and gates are the backend's own types (`mota_backend::rollout`), so the CLI can
//! never send a field the API does not know or miss a default it applies; the backend
//! stays the one judge of what is valid.

mod create;
mod show;
mod watch;

use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::Ctx;
use crate::client::{Client, segment};
use crate::output::{self, age, permille, text};

pub use create::CreateArgs;
pub use show::state_line;
pub use watch::{WatchArgs, watch};

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of a version (or preview it with --dry-run).
    Create(Box<CreateArgs>),
    /// Rollouts, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A rollout: its cohorts, their progress and every gate's value.
    Show {
        /// Rollout id.
        id: i64,
    },
    /// Follow a rollout live until it completes (exit 0) or stops short (exit 7).
    Watch(WatchArgs),
    /// The devices of a rollout and where each is.
    Devices {
        /// Rollout id.
        id: i64,
        /// Only devices in this state (`committed`, `rejected`, `reverted`, `timed_out`, ...).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Stop offering new cohorts; devices already updating finish.
    Pause {
        /// Rollout id.
        id: i64,
    },
    /// Continue a paused rollout (a cohort that failed its gates is accepted as passed).
    Resume {
        /// Rollout id.
        id: i64,
    },
    /// Let the next cohort start (plans with approval).
    Approve {
        /// Rollout id.
        id: i64,
    },
    /// End the rollout; what has not finished is cancelled.
    Abort {
        /// Rollout id.
        id: i64,
    },
    /// End it and send every device that took the version back to its previous model.
    Rollback {
        /// Rollout id.
        id: i64,
    },
}

/// Rollouts of at most this many devices list them in `mota rollout show`.
const SHOWN_DEVICES: u64 = 20;

pub async fn run(cmd: RolloutCommand, ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        RolloutCommand::Create(args) => create::run(&client, *args, ctx.json).await,
        RolloutCommand::List { limit } => list(&client, limit, ctx.json).await,
        RolloutCommand::Show { id } => {
            let rollout = get(&client, id).await?;
            if ctx.json {
                output::json(&rollout);
                return Ok(());
            }
            show::print(&rollout);
            // A small rollout shows each device's own measurement; a fleet's would drown
            // the cohorts.
            let size: u64 =
                rollout["cohorts"].as_array().map_or(0, |cs| cs.iter().filter_map(|c| c["size"].as_u64()).sum());
            if size <= SHOWN_DEVICES {
                println!();
                devices(&client, id, None, usize::MAX, false).await?;
            } else {
                println!("\n{size} devices: `mota rollout devices {id}` lists what each one measured");
            }
            Ok(())
        }
        RolloutCommand::Watch(args) => watch(&client, &args, ctx.json).await,
        RolloutCommand::Devices { id, state, limit } => devices(&client, id, state, limit, ctx.json).await,
        RolloutCommand::Pause { id } => act(&client, id, "pause", ctx.json).await,
        RolloutCommand::Resume { id } => act(&client, id, "resume", ctx.json).await,
        RolloutCommand::Approve { id } => act(&client, id, "approve", ctx.json).await,
        RolloutCommand::Abort { id } => act(&client, id, "abort", ctx.json).await,
        RolloutCommand::Rollback { id } => act(&client, id, "rollback", ctx.json).await,
    }
}

/// `GET /v1/rollouts/{id}`.
pub async fn get(client: &Client, id: i64) -> Result<Value> {
    client.get(&format!("/v1/rollouts/{id}"), &[]).await.with_context(|| format!("reading rollout {id}"))
}

async fn list(client: &Client, limit: usize, json: bool) -> Result<()> {
    let rollouts = client.all("/v1/rollouts", &[], limit).await.context("listing rollouts")?;
    if json {
        output::json(&Value::Array(rollouts));
        return Ok(());
    }
    let rows = rollouts
        .iter()
        .map(|r| {
            let cohorts = r["cohorts"].as_array().map(Vec::as_slice).unwrap_or_default();
            let passed = cohorts.iter().filter(|c| c["state"] == "passed").count();
            let (committed, size) = cohorts.iter().fold((0, 0), |(c, s), k| {
                (c + k["tally"]["committed"].as_u64().unwrap_or(0), s + k["size"].as_u64().unwrap_or(0))
            });
            vec![
                text(&r["id"]),
                format!("{} {}", text(&r["model"]), text(&r["version"])),
                state_line(r),
                format!("{passed}/{}", cohorts.len()),
                format!("{committed}/{size}"),
                age(&r["created_at"]),
            ]
        })
        .collect();
    output::table(
        &["id", "version", "state", "cohorts passed", "committed", "created"],
        rows,
        "no rollouts yet: `mota rollout create MODEL VERSION`",
    );
    Ok(())
}

pub(crate) async fn devices(client: &Client, id: i64, state: Option<String>, limit: usize, json: bool) -> Result<()> {
    let query: Vec<(&str, String)> = state.map(|s| ("state", s)).into_iter().collect();
    let attempts = client
        .all(&format!("/v1/rollouts/{id}/devices"), &query, limit)
        .await
        .with_context(|| format!("listing the devices of rollout {id}"))?;
    if json {
        output::json(&Value::Array(attempts));
        return Ok(());
    }
    let rows = attempts
        .iter()
        .map(|a| {
            vec![
                text(&a["device_id"]),
                (a["cohort"].as_i64().unwrap_or(0) + 1).to_string(),
                text(&a["state"]),
                match a["delta"].as_bool() {
                    Some(true) => "patch".into(),
                    Some(false) => "full".into(),
                    None => "-".into(),
                },
                permille(&a["accuracy_permille"]),
                permille(&a["prev_accuracy_permille"]),
                a["latency_us"].as_i64().map_or("-".into(), |us| format!("{us} µs")),
                output::error(a),
            ]
        })
        .collect();
    output::table(
        &["device", "cohort", "state", "sent", "accuracy", "before", "latency", "error"],
        rows,
        "no devices in that state",
    );
    Ok(())
}

async fn act(client: &Client, id: i64, action: &str, json: bool) -> Result<()> {
    let rollout = client
        .send(client.request(Method::POST, &format!("/v1/rollouts/{id}/{}", segment(action))))
        .await
        .with_context(|| format!("{action} rollout {id}"))?;
    if json {
        output::json(&rollout);
    } else {
        println!("rollout {id}: {}", state_line(&rollout));
    }
    Ok(())
}
