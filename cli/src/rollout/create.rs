//! `mota rollout create`: the request from a plan file (TOML or JSON, the API's own
//! `selector`/`plan`/`gates` documents) with flags on top, so a team can keep its
//! standard plan in a file and still change one gate on the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mota_backend::rollout::{CohortSpec, Gates, OnFailure, Plan, Selector};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::show;
use crate::client::Client;
use crate::output;

/// What a plan file holds: any of the three documents.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Which devices.
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Cohorts, canaries, approval.
    #[serde(default)]
    pub plan: Option<Plan>,
    /// Gates.
    #[serde(default)]
    pub gates: Option<Gates>,
}

/// `mota rollout create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// Model name.
    pub model: String,
    /// The version to roll out.
    pub version: String,
    /// A plan file (TOML or JSON) with `selector`, `plan` and `gates` sections; flags
    /// override what it says.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Cohorts in order: `N%` for a cumulative share of the devices, `N` for N more
    /// devices (e.g. `10%,50%,100%` or `5,50%,100%`) [default: 10%,50%,100%].
    #[arg(long, value_delimiter = ',', value_parser = cohort)]
    pub cohorts: Vec<CohortSpec>,
    /// A device that goes first, in the first cohort (repeat for more).
    #[arg(long = "canary", value_name = "DEVICE")]
    pub canaries: Vec<String>,
    /// Seed of the stable hash that orders devices into cohorts [default: the model name].
    #[arg(long)]
    pub seed: Option<String>,
    /// Each cohort after the first waits for `mota rollout approve`.
    #[arg(long)]
    pub approval: bool,
    /// Only devices of this class [default: the model's].
    #[arg(long)]
    pub class: Option<String>,
    /// Only devices with this tag (repeat: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only this device (repeat for more).
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Devices that must commit before a cohort passes [default: 1].
    #[arg(long)]
    pub min_reports: Option<u32>,
    /// Largest share of a cohort's finished devices that may fail, ‰ [default: 100].
    #[arg(long)]
    pub max_failure_permille: Option<u16>,
    /// A device silent this long after its offer counts as failed [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stuck_timeout: Option<Duration>,
    /// Lowest mean on-device accuracy of the new model, ‰.
    #[arg(long)]
    pub min_accuracy_permille: Option<u16>,
    /// Largest mean drop of on-device accuracy below the model devices ran before, ‰.
    #[arg(long)]
    pub max_accuracy_drop_permille: Option<u16>,
    /// Largest increase of mean inference latency over the previous model, ‰.
    #[arg(long)]
    pub max_latency_increase_permille: Option<u32>,
    /// How long a cohort's gates must keep holding before it passes [default: 0s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// What a broken gate does [default: pause].
    #[arg(long, value_parser = on_failure)]
    pub on_failure: Option<OnFailure>,
    /// Show the cohort sizes, patch/full counts, offline, incompatible and busy devices;
    /// create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take selected devices out of the live rollouts still updating them (their attempts
    /// there are cancelled); without it such devices make the request fail.
    #[arg(long)]
    pub supersede: bool,
    /// Follow the rollout once created (as `mota rollout watch`).
    #[arg(long)]
    pub watch: bool,
}

fn cohort(s: &str) -> Result<CohortSpec, String> {
    let s = s.trim();
    let parsed = match s.strip_suffix('%') {
        Some(p) => p.trim().parse().map(|percent| CohortSpec::Percent { percent }),
        None => s.parse().map(|count| CohortSpec::Count { count }),
    };
    parsed.map_err(|_| format!("{s:?}: a cohort is `N%` (cumulative share) or `N` (devices)"))
}

fn on_failure(s: &str) -> Result<OnFailure, String> {
    match s {
        "pause" => Ok(OnFailure::Pause),
        "abort" => Ok(OnFailure::Abort),
        "rollback" => Ok(OnFailure::Rollback),
        _ => Err(format!("{s:?}: one of pause, abort, rollback")),
    }
}

fn read_plan(path: &std::path::Path) -> Result<PlanFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    } else {
        toml::from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("{}: expected `selector`, `plan` and `gates` sections", path.display()))
}

/// The request body: the file's documents, then the flags.
pub fn request(args: &CreateArgs) -> Result<Value> {
    let file = args.plan.as_deref().map(read_plan).transpose()?.unwrap_or_default();
    let mut selector = file.selector.unwrap_or_default();
    if args.class.is_some() {
        selector.class.clone_from(&args.class);
    }
    if !args.tags.is_empty() {
        selector.tags.clone_from(&args.tags);
    }
    if !args.devices.is_empty() {
        selector.ids.clone_from(&args.devices);
    }
    let mut plan = file.plan.unwrap_or(Plan {
        cohorts: vec![
            CohortSpec::Percent { percent: 10 },
            CohortSpec::Percent { percent: 50 },
            CohortSpec::Percent { percent: 100 },
        ],
        canary: Vec::new(),
        seed: None,
        approval: false,
    });
    if !args.cohorts.is_empty() {
        plan.cohorts.clone_from(&args.cohorts);
    }
    if !args.canaries.is_empty() {
        plan.canary.clone_from(&args.canaries);
    }
    if args.seed.is_some() {
        plan.seed.clone_from(&args.seed);
    }
    plan.approval |= args.approval;
    let mut gates = file.gates.unwrap_or_default();
    if let Some(n) = args.min_reports {
        gates.min_reports = n;
    }
    if let Some(p) = args.max_failure_permille {
        gates.max_failure_permille = p;
    }
    if let Some(d) = args.stuck_timeout {
        if d.as_secs() == 0 {
            bail!("--stuck-timeout: at least one second");
        }
        gates.stuck_timeout_s = d.as_secs();
    }
    gates.min_accuracy_permille = args.min_accuracy_permille.or(gates.min_accuracy_permille);
    gates.max_accuracy_drop_permille = args.max_accuracy_drop_permille.or(gates.max_accuracy_drop_permille);
    gates.max_latency_increase_permille = args.max_latency_increase_permille.or(gates.max_latency_increase_permille);
    if let Some(d) = args.soak {
        gates.soak_s = d.as_secs();
    }
    if let Some(f) = args.on_failure {
        gates.on_failure = f;
    }
    Ok(serde_json::json!({
        "model": args.model,
        "version": args.version,
        "selector": selector,
        "plan": plan,
        "gates": gates,
        "dry_run": args.dry_run,
        "supersede": args.supersede,
    }))
}

pub async fn run(client: &Client, args: CreateArgs, json: bool) -> Result<()> {
    let body = request(&args)?;
    let answer = client
        .json(Method::POST, "/v1/rollouts", &body)
        .await
        .with_context(|| format!("creating a rollout of {} {}", args.model, args.version))?;
    if args.dry_run {
        if json {
            output::json(&answer);
            return Ok(());
        }
        println!(
            "{} devices selected: {} would get a patch, {} the full image, {} already run {}",
            answer["population"], answer["delta"], answer["full"], answer["already_running"], args.version
        );
        if answer["offline"].as_u64().unwrap_or(0) > 0 {
            println!(
                "{} offline now: they find their offer when they reconnect (waiting, not failed, until the offline limit)",
                answer["offline"]
            );
        }
        for d in answer["incompatible"].as_array().into_iter().flatten() {
            println!("incompatible, never offered: {} ({})", output::text(&d["device"]), output::text(&d["reason"]));
        }
        for d in answer["busy"].as_array().into_iter().flatten() {
            println!(
                "busy in rollout {}: {} (creating refuses it; --supersede takes it over)",
                d["rollout"],
                output::text(&d["device"])
            );
        }
        let rows = answer["cohorts"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        vec![
                            (c["position"].as_u64().unwrap_or(0) + 1).to_string(),
                            output::text(&c["size"]),
                            output::text(&c["canaries"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        output::table(&["cohort", "devices", "canaries"], rows, "no cohorts: no device matches the selector");
        return Ok(());
    }
    let id = answer["id"].as_i64().context("the backend answered without a rollout id")?;
    if json && !args.watch {
        output::json(&answer);
    } else if !json {
        println!("created rollout {id}: {} {} — {}", args.model, args.version, show::state_line(&answer));
        if !args.watch {
            println!("follow it with `mota rollout watch {id}`");
        }
    }
    if args.watch {
        super::watch(client, &super::WatchArgs::of(id), json).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn body(argv: &[&str]) -> Value {
        let t = T::try_parse_from([&["t", "digits", "1.1.0"], argv].concat()).unwrap_or_else(|e| panic!("{e}"));
        request(&t.args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn flags_make_the_documents_the_api_takes() {
        let b = body(&[
            "--cohorts",
            "5,50%,100%",
            "--canary",
            "d-1",
            "--tag",
            "lab",
            "--stuck-timeout",
            "90s",
            "--max-accuracy-drop-permille",
            "20",
            "--on-failure",
            "rollback",
        ]);
        assert_eq!(b["plan"]["cohorts"], serde_json::json!([{"count": 5}, {"percent": 50}, {"percent": 100}]));
        assert_eq!(b["plan"]["canary"], serde_json::json!(["d-1"]));
        assert_eq!(b["selector"]["tags"], serde_json::json!(["lab"]));
        assert_eq!(b["gates"]["stuck_timeout_s"], 90);
        assert_eq!(b["gates"]["max_accuracy_drop_permille"], 20);
        assert_eq!(b["gates"]["on_failure"], "rollback");
        assert_eq!(b["gates"]["max_failure_permille"], 100, "the backend's default");
    }

    #[test]
    fn flags_override_a_plan_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("plan.toml");
        std::fs::write(
            &file,
            "[plan]\ncohorts = [{ percent = 1 }, { percent = 100 }]\napproval = true\n\n\
             [gates]\nmin_reports = 3\nmax_failure_permille = 50\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let b = body(&["--plan", file.to_str().unwrap_or_default(), "--min-reports", "7"]);
        assert_eq!(b["plan"]["cohorts"], serde_json::json!([{"percent": 1}, {"percent": 100}]));
        assert_eq!(b["plan"]["approval"], true);
        assert_eq!(b["gates"]["min_reports"], 7);
        assert_eq!(b["gates"]["max_failure_permille"], 50);
        std::fs::write(&file, "[plan]\nwaves = 3\n").unwrap_or_else(|e| panic!("{e}"));
        let t = T::try_parse_from(["t", "m", "v", "--plan", file.to_str().unwrap_or_default()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(request(&t.args).is_err(), "unknown fields are refused, not ignored");
    }

    #[test]
    fn a_malformed_cohort_is_refused_with_the_syntax() {
        let e = T::try_parse_from(["t", "m", "v", "--cohorts", "10%,half"]).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("a cohort is `N%`")));
    }
}
