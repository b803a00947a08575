//! `mota rollout watch`: a rollout live, one progress bar per cohort with its tally and
//! gate values, until it completes (exit 0) or stops short (exit 7, with the reason), as
//! `kubectl rollout status` does for deployments.
//!
//! On a terminal the bars redraw in place; otherwise (CI logs, pipes) a line is printed
//! each time a cohort changes, and with `--json` each changed rollout document is one
//! JSON line, so a script can follow without parsing text.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::show::{gate_line, state_line, tally_line};
use crate::client::Client;
use crate::exit::Stopped;

/// `mota rollout watch`.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// Rollout id.
    pub id: i64,
    /// Time between polls.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Give up after this long (exit 1) [default: never].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

impl WatchArgs {
    /// Default watching of rollout `id`.
    pub fn of(id: i64) -> Self {
        Self { id, interval: Duration::from_secs(1), timeout: None }
    }
}

/// Whether a rollout in `state` will not move again by itself.
fn settled(r: &Value) -> bool {
    matches!(r["state"].as_str(), Some("completed" | "aborted" | "rolled_back" | "paused"))
}

/// One cohort's line: `cohort 2 active  12 committed, 3 updating  failure_rate 0‰ ≤ 100‰ ok`.
pub fn cohort_line(c: &Value) -> String {
    let gates: Vec<String> = c["gates"].as_array().map(|gs| gs.iter().map(gate_line).collect()).unwrap_or_default();
    let accuracy = c["tally"]["mean_accuracy_permille"]
        .as_f64()
        .map(|a| format!("  accuracy {:.1} %", a / 10.0))
        .unwrap_or_default();
    format!(
        "cohort {} {:7} {}{accuracy}  [{}]",
        c["position"].as_i64().unwrap_or(0) + 1,
        c["state"].as_str().unwrap_or("?"),
        tally_line(&c["tally"]),
        gates.join("; ")
    )
}

/// A cohort under its bar: the tally on the first line, each gate's value against its
/// limit on the second (`watch` on a terminal; short enough for 100 columns).
fn cohort_brief(c: &Value) -> String {
    let gates: Vec<String> = c["gates"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    let mark = match g["holds"].as_bool() {
                        Some(true) => "ok",
                        Some(false) => "BROKEN",
                        None => "…",
                    };
                    let value = g["value"].as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
                    let limit = g["limit"].as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
                    format!("{} {value}/{limit} {mark}", g["gate"].as_str().unwrap_or("?"))
                })
                .collect()
        })
        .unwrap_or_default();
    let accuracy = c["tally"]["mean_accuracy_permille"]
        .as_f64()
        .map(|a| format!(", accuracy {:.1} %", a / 10.0))
        .unwrap_or_default();
    format!(
        "cohort {} {}: {}{accuracy}\n      gates: {}",
        c["position"].as_i64().unwrap_or(0) + 1,
        c["state"].as_str().unwrap_or("?"),
        tally_line(&c["tally"]),
        gates.join(", ")
    )
}

fn finished(c: &Value) -> u64 {
    let t = &c["tally"];
    ["committed", "skipped", "rejected", "reverted", "timed_out", "incompatible", "other"]
        .iter()
        .map(|k| t[k].as_u64().unwrap_or(0))
        .sum()
}

/// Follows rollout `args.id` until it settles.
pub async fn watch(client: &Client, args: &WatchArgs, json: bool) -> Result<()> {
    let started = Instant::now();
    let live = !json && std::io::stderr().is_terminal();
    let multi =
        MultiProgress::with_draw_target(if live { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    let header = multi.add(ProgressBar::new_spinner());
    let mut bars: Vec<ProgressBar> = Vec::new();
    let mut last: Option<Value> = None;
    let mut printed: Vec<String> = Vec::new();
    let rollout = loop {
        let r = super::get(client, args.id).await?;
        let cohorts = r["cohorts"].as_array().cloned().unwrap_or_default();
        if json {
            if last.as_ref() != Some(&r) {
                println!("{}", serde_json::to_string(&r)?);
            }
        } else if live {
            header.set_message(format!(
                "rollout {} {} {}: {}",
                args.id,
                r["model"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                state_line(&r)
            ));
            header.tick();
            while bars.len() < cohorts.len() {
                let bar = multi.add(ProgressBar::new(0));
                if let Ok(style) = ProgressStyle::with_template("  [{bar:24}] {pos:>5}/{len:<5} {msg}") {
                    bar.set_style(style.progress_chars("=> "));
                }
                bars.push(bar);
            }
            for (bar, c) in bars.iter().zip(&cohorts) {
                bar.set_length(c["size"].as_u64().unwrap_or(0));
                bar.set_position(finished(c));
                bar.set_message(cohort_brief(c));
            }
        } else {
            let state = format!("rollout {}: {}", args.id, state_line(&r));
            // printed[0] is the rollout's line, printed[i + 1] cohort i's.
            printed.resize(cohorts.len() + 1, String::new());
            if printed[0] != state {
                eprintln!("{state}");
                printed[0] = state;
            }
            for (i, c) in cohorts.iter().enumerate() {
                let line = cohort_line(c);
                if printed[i + 1] != line {
                    eprintln!("  {line}");
                    printed[i + 1] = line;
                }
            }
        }
        let done = settled(&r);
        last = Some(r);
        if done {
            break last.unwrap_or_default();
        }
        if args.timeout.is_some_and(|t| started.elapsed() >= t) {
            anyhow::bail!(
                "rollout {} still {} after {:?}",
                args.id,
                last.as_ref().map(state_line).unwrap_or_default(),
                args.timeout.unwrap_or_default()
            );
        }
        tokio::time::sleep(args.interval).await;
    };
    header.finish();
    for bar in &bars {
        // `finish` would fill the bar; a cohort that never ran stays empty.
        bar.abandon();
    }
    if !json {
        eprintln!("rollout {} {}", args.id, state_line(&rollout));
    }
    match rollout["state"].as_str() {
        Some("completed") => Ok(()),
        state => Err(Stopped {
            id: args.id,
            state: state.unwrap_or("unknown").to_owned(),
            reason: rollout["reason"].as_str().map(str::to_owned),
        }
        .into()),
    }
}
