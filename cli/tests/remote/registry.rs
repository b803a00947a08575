//! `mota model push/list/show`, `mota valset push/list`, `mota delta list` and `mota keys
//! server` against the registry: tables and JSON, and the refusals (exit 5) that store
//! nothing.

use serde_json::Value;

use crate::support::{Env, TestResult, arg, eventually, fixture, make_digits_set};

fn versions(v: &Value) -> Vec<String> {
    v["versions"]
        .as_array()
        .map(|vs| vs.iter().map(|v| v["version"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pushes_sets_and_versions_and_reads_the_registry_back() -> TestResult {
    let env = Env::start(0).await?;
    assert_eq!(env.ok(&["model", "list"]).await.trim(), "no models yet: `mota model push`");
    assert_eq!(env.ok(&["valset", "list"]).await.trim(), "no validation sets");
    assert_eq!(env.json(&["model", "list"]).await, Value::Array(vec![]));

    // A validation set made locally, pushed on its own.
    let set = make_digits_set(&env).await;
    let v1 = fixture("digits_cnn_v1.tflite");
    let pushed = env.ok(&["valset", "push", &arg(&set)]).await;
    assert!(pushed.starts_with("pushed digits.mvs: "), "{pushed}");
    let sets = env.json(&["valset", "list"]).await;
    assert_eq!(sets.as_array().map(Vec::len), Some(1), "{sets}");
    let sha = sets[0]["sha256"].as_str().ok_or("no sha256")?.to_owned();
    assert_eq!(sha.len(), 64);
    assert!(pushed.contains(&format!("sha256 {sha}")), "{pushed}");
    assert_eq!(sets[0]["name"], "digits.mvs");
    assert_eq!(sets[0]["expectation"], "label");
    let records = sets[0]["records"].as_u64().ok_or("no records")?;
    assert!(pushed.contains(&format!(": {records} records")), "{pushed}");
    let table = env.ok(&["valset", "list"]).await;
    assert!(
        table.lines().any(|l| l.starts_with(&sha[..16]) && l.contains("digits.mvs") && l.contains("label")),
        "{table}"
    );

    // The first version, multipart with the set file (the same bytes: the same set).
    let first = env
        .ok(&[
            "model",
            "push",
            &arg(&v1),
            "--model",
            "digits",
            "--version",
            "1.0.0",
            "--device-class",
            "cortex-m4",
            "--valset",
            &arg(&set),
        ])
        .await;
    assert!(first.starts_with("pushed digits 1.0.0 (counter 1, "), "{first}");
    assert!(first.contains("`mota model show digits 1.0.0`"), "{first}");
    let shown = env.json(&["model", "show", "digits", "1.0.0"]).await;
    assert_eq!(shown["validation_set_sha256"], sha.as_str(), "{shown}");
    let accuracy = shown["accuracy_permille"].as_u64().ok_or("no accuracy measured")?;
    assert!(first.contains(&format!("accuracy {:.1} % on its validation set", accuracy as f64 / 10.0)), "{first}");
    assert_eq!(env.json(&["valset", "list"]).await.as_array().map(Vec::len), Some(1), "the same set, stored once");

    // The second, a raw body naming the set by digest; the model name from the file name.
    // Not raised: it keeps 1.0.0's security counter.
    let v2 = env.home.path().join("digits.tflite");
    std::fs::copy(fixture("digits_cnn_v2.tflite"), &v2)?;
    let second = env
        .json(&["model", "push", &arg(&v2), "--version", "1.1.0", "--valset-sha256", &sha, "--max-drop-permille", "20"])
        .await;
    assert_eq!(second["model"], "digits");
    assert_eq!((&second["security_counter"], &second["raised_counter"]), (&Value::from(1), &Value::Bool(false)));
    assert_eq!(second["validation_set_sha256"], sha.as_str());
    assert_eq!(second["max_drop_permille"], 20);
    assert_eq!(second["image_size"].as_u64(), Some(std::fs::metadata(&v2)?.len()));

    // Refused: not a model (the server's reason, nothing stored), a version that exists.
    let junk = env.home.path().join("junk.tflite");
    std::fs::write(&junk, b"this is not a flatbuffer, let alone a model")?;
    let refused = env.mota(&["model", "push", &arg(&junk), "--model", "digits", "--version", "2.0.0"]).await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("devices cannot run this model: "), "the server's reason: {refused:?}");
    assert!(refused.stderr.contains("(unusable, HTTP 422)"), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    let missing = env.mota(&["model", "show", "digits", "2.0.0"]).await;
    assert_eq!(missing.code, 3, "the refused version is not stored: {missing:?}");
    let new_model =
        env.mota(&["model", "push", &arg(&junk), "--version", "1.0.0", "--device-class", "cortex-m4"]).await;
    assert_eq!(new_model.code, 5, "{new_model:?}");
    assert_eq!(env.mota(&["model", "show", "junk"]).await.code, 3, "no model made for a refused upload");
    let again = env.mota(&["model", "push", &arg(&v2), "--model", "digits", "--version", "1.1.0"]).await;
    assert_eq!(again.code, 5, "{again:?}");
    assert!(
        again.stderr.contains("digits 1.1.0 exists; versions are immutable (duplicate_version, HTTP 409)"),
        "{again:?}"
    );
    assert!(again.stderr.contains("hint: it exists already"), "{again:?}");

    // Listed and shown: two versions, counter 1.
    let models = env.json(&["model", "list"]).await;
    assert_eq!(models.as_array().map(Vec::len), Some(1), "{models}");
    assert_eq!(models[0]["name"], "digits");
    assert_eq!(models[0]["versions"], 2);
    assert_eq!(models[0]["security_counter"], 1);
    let table = env.ok(&["model", "list"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).ok_or("no row")?.split_whitespace().collect();
    assert_eq!(row[..4], ["digits", "cortex-m4", "2", "1"], "{table}");
    let model = env.json(&["model", "show", "digits"]).await;
    assert_eq!(model["model"]["device_class"], "cortex-m4");
    assert_eq!(versions(&model), ["1.1.0", "1.0.0"], "newest first: {model}");
    let page = env.ok(&["model", "show", "digits"]).await;
    assert!(page.lines().any(|l| l.starts_with("model") && l.ends_with("digits")), "{page}");
    assert!(page.lines().any(|l| l.starts_with("1.0.0 ") && l.contains("KiB")), "{page}");
    // version, counter, raised: the first version raised it from 0, the second kept it.
    let cells = |version: &str| -> Vec<String> {
        let line = page.lines().find(|l| l.starts_with(&format!("{version} "))).unwrap_or_default();
        line.split_whitespace().take(3).map(str::to_owned).collect()
    };
    assert_eq!(
        (cells("1.0.0"), cells("1.1.0")),
        (vec!["1.0.0".into(), "1".into(), "yes".into()], vec!["1.1.0".into(), "1".into(), "no".into()]),
        "{page}"
    );

    // The patch from 1.0.0 to 1.1.0, once the backend made it; none to the first.
    eventually(60, "the patch to 1.1.0", || async {
        let deltas = env.json(&["delta", "list", "digits", "1.1.0"]).await;
        deltas.as_array().is_some_and(|ds| ds.iter().any(|d| d["state"] == "done"))
    })
    .await;
    let deltas = env.json(&["delta", "list", "digits", "1.1.0"]).await;
    assert_eq!(deltas.as_array().map(Vec::len), Some(1), "{deltas}");
    assert_eq!(deltas[0]["base_version"], "1.0.0");
    assert_eq!(deltas[0]["base_sha256"], shown["image_sha256"]);
    let patch = deltas[0]["patch_size"].as_u64().ok_or("no patch size")?;
    assert!(
        patch > 0 && patch < second["image_size"].as_u64().unwrap_or(0),
        "a patch smaller than the image: {deltas}"
    );
    let table = env.ok(&["delta", "list", "digits", "1.1.0"]).await;
    assert!(table.lines().any(|l| l.starts_with("1.0.0") && l.contains("done") && l.ends_with('%')), "{table}");
    let version = env.ok(&["model", "show", "digits", "1.1.0"]).await;
    assert!(version.lines().any(|l| l.starts_with("counter") && l.ends_with(" 1")), "{version}");
    assert!(version.lines().any(|l| l.starts_with("raised counter") && l.ends_with(" no")), "{version}");
    assert!(version.lines().any(|l| l.starts_with("validation set") && l.ends_with(&sha)), "{version}");
    assert!(version.lines().any(|l| l.starts_with("max drop") && l.ends_with("2.0 %")), "{version}");
    assert!(version.lines().any(|l| l.starts_with("1.0.0") && l.contains("done")), "{version}");
    assert_eq!(
        env.json(&["model", "show", "digits", "1.1.0"]).await["deltas"],
        deltas,
        "the version shows the same patches"
    );
    assert_eq!(env.json(&["delta", "list", "digits", "1.0.0"]).await, Value::Array(vec![]));
    let none = env.ok(&["delta", "list", "digits", "1.0.0"]).await;
    assert_eq!(none.trim(), "no deltas (the first version of a model has none)");
    assert_eq!(env.mota(&["delta", "list", "digits", "9.9.9"]).await.code, 3);

    // A third, raising the counter: +1, and said so.
    let third = env.ok(&["model", "push", &arg(&v2), "--version", "1.2.0", "--raise-counter"]).await;
    assert!(third.starts_with("pushed digits 1.2.0 (counter 2, "), "{third}");
    assert!(third.contains("raised the security counter to 2: devices that commit 1.2.0 refuse"), "{third}");
    let raised = env.json(&["model", "show", "digits", "1.2.0"]).await;
    assert_eq!((&raised["security_counter"], &raised["raised_counter"]), (&Value::from(2), &Value::Bool(true)));
    let page = env.ok(&["model", "show", "digits"]).await;
    assert!(page.lines().any(|l| l.starts_with("counter") && l.ends_with(" 2")), "{page}");
    let line = page.lines().find(|l| l.starts_with("1.2.0 ")).unwrap_or_default();
    assert_eq!(line.split_whitespace().take(3).collect::<Vec<_>>(), ["1.2.0", "2", "yes"], "{page}");

    // The key the backend signs with: a development key here, and said so.
    let keys = env.json(&["keys", "server"]).await;
    assert_eq!(keys["release"]["development"], true, "{keys}");
    let key_id = keys["release"]["key_id"].as_str().ok_or("no key id")?;
    let text = env.ok(&["keys", "server"]).await;
    assert!(text.lines().any(|l| l.starts_with("release key") && l.ends_with(key_id)), "{text}");
    assert!(text.contains("development key, generated by the backend"), "{text}");
    assert!(!text.contains("1970"), "a real expiry date: {text}");
    env.stop().await
}
