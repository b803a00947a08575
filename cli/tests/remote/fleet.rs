//! `mota device list/show/history/add/tag/untag` and `mota events` on a small simulated
//! fleet and a pre-registered device: filters, tables and JSON, and the audit trail the
//! changes leave.

use serde_json::Value;

use crate::support::{Env, TestResult, eventually};

const DEVICES: usize = 3;

fn ids(list: &Value) -> Vec<String> {
    list.as_array().map(|ds| ds.iter().map(|d| d["id"].as_str().unwrap_or("").to_owned()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_filters_registers_and_tags_devices_and_reads_the_audit_log() -> TestResult {
    let env = Env::start(DEVICES).await?;
    eventually(60, "the fleet to register", || async {
        let devices = env.json(&["device", "list"]).await;
        devices.as_array().is_some_and(|ds| ds.iter().filter(|d| d["online"] == true).count() == DEVICES)
    })
    .await;

    // Provisioned before it ever connects, with tags: its login is printed once.
    let added = env.ok(&["device", "provision", "lab-1", "--class", "esp32s3", "--tag", "lab", "--tag", "eu"]).await;
    let lines: Vec<&str> = added.lines().collect();
    assert_eq!(lines[0], "provisioned lab-1 (esp32s3)", "{added}");
    assert_eq!(lines[1], "mqtt username: lab-1  (also its client id)", "{added}");
    let password = lines[2].strip_prefix("mqtt password: ").ok_or(added.clone())?;
    assert!(password.len() == 64 && password.bytes().all(|b| b.is_ascii_hexdigit()), "{added}");
    let twice = env.mota(&["device", "provision", "lab-1", "--class", "esp32s3"]).await;
    assert_eq!(twice.code, 5, "{twice:?}");
    assert!(twice.stderr.contains("device lab-1 exists"), "{twice:?}");
    let added = env.json(&["device", "add", "lab-2", "--class", "esp32s3"]).await;
    assert_eq!(added["device"]["id"], "lab-2");
    assert_eq!(added["device"]["online"], false);
    assert_eq!(added["device"]["tags"], Value::Array(vec![]));
    assert_eq!(added["mqtt"]["username"], "lab-2");
    assert_eq!(added["mqtt"]["mosquitto_dynsec"]["commands"][1]["clientid"], "lab-2");
    let again = env.json(&["device", "credentials", "lab-2"]).await;
    assert_ne!(again["mqtt"]["password"], added["mqtt"]["password"], "a new password");

    // Listed, and filtered by class, tag and running model.
    let all = env.json(&["device", "list"]).await;
    assert_eq!(ids(&all), ["demo-00000", "demo-00001", "demo-00002", "lab-1", "lab-2"]);
    let running = all[0]["running_model"].as_str().ok_or("the simulated devices report their model")?.to_owned();
    assert_eq!(ids(&env.json(&["device", "list", "--class", "esp32s3"]).await), ["lab-1", "lab-2"]);
    assert_eq!(ids(&env.json(&["device", "list", "--class", "cortex-m4"]).await).len(), DEVICES);
    assert_eq!(ids(&env.json(&["device", "list", "--tag", "eu"]).await), ["lab-1"]);
    assert_eq!(ids(&env.json(&["device", "list", "--model", &running]).await).len(), DEVICES);
    assert_eq!(env.json(&["device", "list", "--model", "no-such-model"]).await, Value::Array(vec![]));
    assert_eq!(ids(&env.json(&["device", "list", "--limit", "2"]).await), ["demo-00000", "demo-00001"]);
    let table = env.ok(&["device", "list", "--tag", "lab"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("LAST SEEN"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..5], ["lab-1", "esp32s3", "-", "-", "no"], "{table}");
    assert_eq!(row.last(), Some(&"eu,lab"), "{table}");
    let table = env.ok(&["device", "list", "--class", "cortex-m4"]).await;
    assert_eq!(table.lines().filter(|l| l.starts_with("demo-") && l.contains(" yes ")).count(), DEVICES, "{table}");
    assert_eq!(env.ok(&["device", "list", "--tag", "nothing"]).await.trim(), "no devices");

    // One device.
    let shown = env.json(&["device", "show", "demo-00001"]).await;
    assert_eq!(shown["device_class"], "cortex-m4");
    assert_eq!(shown["online"], true);
    let page = env.ok(&["device", "show", "demo-00001"]).await;
    assert!(page.lines().any(|l| l.starts_with("id") && l.ends_with("demo-00001")), "{page}");
    assert!(page.lines().any(|l| l.starts_with("online") && l.ends_with("yes")), "{page}");
    assert!(page.lines().any(|l| l.starts_with("model") && l.contains(&running)), "{page}");
    assert!(page.lines().any(|l| l.starts_with("last seen") && l.ends_with(" ago)")), "{page}");
    let page = env.ok(&["device", "show", "lab-1"]).await;
    assert!(page.lines().any(|l| l.starts_with("tags") && l.ends_with("eu,lab")), "{page}");
    assert!(page.lines().any(|l| l.starts_with("online") && l.ends_with("no")), "{page}");

    // No rollout has reached it.
    assert_eq!(env.json(&["device", "history", "demo-00001"]).await, Value::Array(vec![]));
    assert_eq!(env.ok(&["device", "history", "demo-00001"]).await.trim(), "no rollout has reached this device");
    assert_eq!(env.mota(&["device", "history", "nope"]).await.code, 3);

    // Tags added and removed (each change once in the audit log).
    let tagged = env.ok(&["device", "tag", "demo-00001", "canary", "beta"]).await;
    assert_eq!(tagged.trim(), "demo-00001: tags beta,canary");
    let tagged = env.json(&["device", "tag", "demo-00001", "canary"]).await;
    assert_eq!(tagged["tags"], serde_json::json!(["beta", "canary"]), "tagging is idempotent");
    let untagged = env.ok(&["device", "untag", "demo-00001", "beta"]).await;
    assert_eq!(untagged.trim(), "demo-00001: tags canary");
    let untagged = env.json(&["device", "untag", "lab-1", "lab", "eu"]).await;
    assert_eq!(untagged["tags"], Value::Array(vec![]));
    assert_eq!(ids(&env.json(&["device", "list", "--tag", "canary"]).await), ["demo-00001"]);
    assert_eq!(env.json(&["device", "list", "--tag", "lab"]).await, Value::Array(vec![]));
    let missing = env.mota(&["device", "tag", "nope", "x"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    let bad = env.mota(&["device", "tag", "demo-00001", "not a tag"]).await;
    assert_eq!(bad.code, 5, "{bad:?}");

    // The audit log: filtered by kind and subject, newest first, limited.
    let tags = env.json(&["events", "--kind", "device.tagged"]).await;
    let subjects: Vec<&str> =
        tags.as_array().ok_or("not a list")?.iter().filter_map(|e| e["subject"].as_str()).collect();
    assert_eq!(subjects, ["device:demo-00001", "device:demo-00001"], "{tags}");
    assert_eq!(tags[0]["detail"]["tag"], "beta", "canary, then beta; newest first: {tags}");
    assert_eq!(tags[0]["actor"], "token:demo");
    let lab = env.json(&["events", "--subject", "device:lab-1"]).await;
    let kinds: Vec<&str> = lab.as_array().ok_or("not a list")?.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["device.untagged", "device.untagged", "device.provisioned"], "{lab}");
    let registered = env.json(&["events", "--kind", "device.registered"]).await;
    assert_eq!(registered.as_array().map(Vec::len), Some(DEVICES), "{registered}");
    assert!(registered.as_array().is_some_and(|es| es.iter().all(|e| e["actor"] == "backend")));
    let newest = env.json(&["events", "--limit", "1"]).await;
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(newest[0]["kind"], "device.untagged");
    assert_eq!(newest[0]["subject"], "device:lab-1");
    let both = env.json(&["events", "--kind", "device.provisioned", "--subject", "device:lab-2"]).await;
    assert_eq!(both.as_array().map(Vec::len), Some(1), "{both}");
    let table = env.ok(&["events", "--subject", "device:lab-1", "--limit", "1"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("SUBJECT"), "{table}");
    assert!(
        lines[1].contains("token:demo") && lines[1].contains("device.untagged") && lines[1].contains("device:lab-1"),
        "{table}"
    );
    assert_eq!(env.ok(&["events", "--kind", "rollout.created"]).await.trim(), "no events");
    env.stop().await
}
