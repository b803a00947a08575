//! `mota events`: the audit log (who uploaded, signed, started, paused, approved what).

use anyhow::{Context, Result};
use serde_json::Value;

use crate::Ctx;
use crate::output::{self, text, time};

/// Filters.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only events on this subject (`rollout:3`, `device:d-7`, `model:digits/1.1.0`).
    #[arg(long)]
    subject: Option<String>,
    /// Only events of this kind (`rollout.cohort_passed`, `version.created`, ...).
    #[arg(long)]
    kind: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

pub async fn run(args: EventsArgs, ctx: &Ctx) -> Result<()> {
    let mut query = Vec::new();
    query.extend(args.subject.map(|s| ("subject", s)));
    query.extend(args.kind.map(|k| ("kind", k)));
    let events = ctx.client()?.all("/v1/events", &query, args.limit).await.context("reading the audit log")?;
    if ctx.json {
        output::json(&Value::Array(events));
        return Ok(());
    }
    let rows = events
        .iter()
        .map(|e| {
            vec![
                text(&e["id"]),
                time(&e["at"]),
                text(&e["actor"]),
                text(&e["kind"]),
                text(&e["subject"]),
                e["detail"].to_string(),
            ]
        })
        .collect();
    output::table(&["id", "at", "actor", "kind", "subject", "detail"], rows, "no events");
    Ok(())
}
