//! A rollout for people: a header, one row per cohort, and each cohort's gates with
//! their limit, value and verdict. `watch` prints the same cohort summary in its bars.

use serde_json::Value;

use crate::output::{self, permille, text, time};

/// `running`, `paused (gate failure_rate: ...)`, `running, awaiting approval`.
pub fn state_line(r: &Value) -> String {
    let mut line = text(&r["state"]);
    if r["awaiting_approval"] == true {
        line.push_str(", awaiting approval");
    }
    if let Some(reason) = r["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

/// `12 committed, 3 updating, 1 failed, 4 waiting` for a cohort's tally.
pub fn tally_line(t: &Value) -> String {
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    let mut parts = vec![format!("{} committed", n("committed"))];
    for (count, what) in [
        (n("in_progress"), "updating"),
        (n("offline"), "waiting: offline"),
        (n("rejected"), "rejected"),
        (n("reverted"), "reverted after commit"),
        (n("timed_out"), "timed out"),
        (n("skipped"), "already on it"),
        (n("incompatible"), "incompatible"),
        (n("other"), "cancelled or rolled back"),
        (n("pending"), "waiting"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    parts.join(", ")
}

/// A gate with its value and verdict: `failure_rate 0 ≤ 100 ✓`.
pub fn gate_line(g: &Value) -> String {
    let name = text(&g["gate"]);
    let limit = number(&g["limit"]);
    let value = g["value"].as_f64().map_or("-".to_owned(), |v| number(&Value::from(v)));
    let (op, unit) = match name.as_str() {
        "min_reports" | "min_accuracy" => ("≥", if name == "min_accuracy" { "‰" } else { "" }),
        "failure_rate" | "accuracy_drop" | "latency_increase" => ("≤", "‰"),
        _ => ("vs", ""),
    };
    let verdict = match g["holds"].as_bool() {
        Some(true) => "ok",
        Some(false) => "BROKEN",
        None => "waiting",
    };
    format!("{name} {value}{unit} {op} {limit}{unit} {verdict}")
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.1}"),
        None => "-".to_owned(),
    }
}

/// Prints a rollout.
pub fn print(r: &Value) {
    let plan = &r["plan"];
    let cohorts: Vec<String> = plan["cohorts"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| match (c["percent"].as_u64(), c["count"].as_u64()) {
                    (Some(p), _) => format!("{p}%"),
                    (_, Some(n)) => format!("+{n}"),
                    _ => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let selector = &r["selector"];
    output::fields(&[
        ("rollout", text(&r["id"])),
        ("version", format!("{} {}", text(&r["model"]), text(&r["version"]))),
        ("state", state_line(r)),
        (
            "devices",
            format!(
                "class {}, tags {}, ids {}",
                text(&selector["class"]),
                text(&selector["tags"]),
                text(&selector["ids"])
            ),
        ),
        (
            "plan",
            format!(
                "{}{}{}",
                cohorts.join(" → "),
                if plan["canary"].as_array().is_some_and(|c| !c.is_empty()) {
                    format!(", canaries {}", text(&plan["canary"]))
                } else {
                    String::new()
                },
                if plan["approval"] == true { ", approval between cohorts" } else { "" }
            ),
        ),
        ("on failure", text(&r["gates"]["on_failure"])),
        ("created", format!("{} by {}", time(&r["created_at"]), text(&r["created_by"]))),
    ]);
    println!();
    let rows = r["cohorts"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let t = &c["tally"];
                    vec![
                        (c["position"].as_i64().unwrap_or(0) + 1).to_string(),
                        text(&c["state"]),
                        text(&c["size"]),
                        tally_line(t),
                        permille(&t["mean_accuracy_permille"]),
                        t["mean_accuracy_drop_permille"].as_f64().map_or("-".into(), |d| format!("{d:.1}‰")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(&["cohort", "state", "size", "devices", "accuracy", "drop"], rows, "no cohorts");
    for c in r["cohorts"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let gates: Vec<String> = c["gates"].as_array().map(|gs| gs.iter().map(gate_line).collect()).unwrap_or_default();
        let reason = c["reason"].as_str().map(|r| format!(" — {r}")).unwrap_or_default();
        println!("cohort {} gates: {}{reason}", c["position"].as_i64().unwrap_or(0) + 1, gates.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gates_and_tallies_read_as_sentences() {
        let g = json!({"gate": "failure_rate", "limit": 100.0, "value": 0.0, "holds": true});
        assert_eq!(gate_line(&g), "failure_rate 0‰ ≤ 100‰ ok");
        let g = json!({"gate": "accuracy_drop", "limit": 20.0, "value": 812.5, "holds": false});
        assert_eq!(gate_line(&g), "accuracy_drop 812.5‰ ≤ 20‰ BROKEN");
        let g = json!({"gate": "min_reports", "limit": 2.0, "value": null, "holds": null});
        assert_eq!(gate_line(&g), "min_reports - ≥ 2 waiting");
        let t = json!({"committed": 3, "in_progress": 1, "rejected": 0, "pending": 5});
        assert_eq!(tally_line(&t), "3 committed, 1 updating, 5 waiting");
        let t = json!({"committed": 1, "rejected": 1, "reverted": 2});
        assert_eq!(tally_line(&t), "1 committed, 1 rejected, 2 reverted after commit");
        let r = json!({"state": "paused", "awaiting_approval": false, "reason": "cohort 1: failure_rate"});
        assert_eq!(state_line(&r), "paused (cohort 1: failure_rate)");
    }
}
