//! The registry through the API, in memory: real fixture models checked by mota-runtime,
//! validation sets evaluated, deltas computed and applied back, manifests verified the
//! way a device verifies them; and every refusal leaves no row and no blob behind.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Api, TestResult, digits_set, model};
use mota_proto::{DevicePolicy, Limits};

#[tokio::test]
async fn a_version_is_checked_stored_and_served() -> TestResult {
    let api = Api::new().await?;
    let image = model("digits_cnn_v1")?;
    let r = api.upload("digits", "1.0.0", image.clone(), "").await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let v = r.json();
    assert_eq!(v["security_counter"], 1);
    assert_eq!(v["image_size"], image.len());
    assert!(v["arena_bytes"].as_i64().unwrap_or(0) > 0);
    assert!(v["ops"].as_array().is_some_and(|ops| ops.iter().any(|o| o == "CONV_2D")));
    let sha = v["image_sha256"].as_str().unwrap_or_default().to_owned();

    let m = api.get("/v1/models/digits", &api.viewer).await?.json();
    assert_eq!((m["device_class"].as_str(), m["versions"].as_i64()), (Some("mcu"), Some(1)));
    let whole = api.get(&format!("/v1/artifacts/{sha}"), &api.viewer).await?;
    assert_eq!((whole.status, whole.body == image), (StatusCode::OK, true));
    let part = api
        .send(
            Request::get(format!("/v1/artifacts/{sha}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", api.viewer))
                .header(header::RANGE, "bytes=100-1123")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, image[100..1124]);
    let range = part.headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(range, format!("bytes 100-1123/{}", image.len()));
    let past = api
        .send(
            Request::get(format!("/v1/artifacts/{sha}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", api.viewer))
                .header(header::RANGE, format!("bytes={}-", image.len()))
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    Ok(())
}

#[tokio::test]
async fn deltas_are_computed_in_the_background_and_manifests_carry_them() -> TestResult {
    let api = Api::new().await?;
    let (v1, v2) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    api.upload("digits", "1.0.0", v1.clone(), "").await?;
    let r = api.upload("digits", "1.1.0", v2.clone(), "&raise_counter=true").await?;
    assert_eq!(r.json()["security_counter"], 2, "raised on request");
    // The worker is not running in this in-memory server: run what is queued.
    assert_eq!(api.state.registry.run_delta_jobs().await?, 1);
    let version = api.get("/v1/models/digits/versions/1.1.0", &api.viewer).await?.json();
    let delta = &version["deltas"][0];
    assert_eq!((delta["base_version"].as_str(), delta["state"].as_str()), (Some("1.0.0"), Some("done")));
    let patch_size = delta["patch_size"].as_u64().unwrap_or(u64::MAX);
    assert!(patch_size < v2.len() as u64 / 2, "patch {patch_size} B for a {} B image", v2.len());

    let base = mota_backend::blobs::hex(&mota_proto::Digest::of(&v1).0);
    let signed = api
        .json(
            "POST",
            "/v1/models/digits/versions/1.1.0/manifests",
            &api.operator,
            serde_json::json!({ "base_sha256": base }),
        )
        .await?;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.json());
    let signed = signed.json();
    // Verified exactly as a device of the class verifies it, under the dev root.
    let root = common::dev_root(&api.dir.path().join("data"))?;
    let envelope = hex_decode(signed["envelope_hex"].as_str().unwrap_or_default());
    let limits = Limits {
        max_image_bytes: 1 << 20,
        max_patch_bytes: 1 << 20,
        max_arena_bytes: 1 << 20,
        max_validation_bytes: 1 << 20,
    };
    let policy = DevicePolicy { device_class: "mcu", security_counter: 1, now: None, revoked: &[], limits };
    let offer = mota_proto::verify(&envelope, &[root], &policy).map_err(|e| format!("{e:?}"))?;
    assert_eq!((offer.manifest.version, offer.manifest.security_counter), ("1.1.0", 2));
    let d = offer.manifest.delta.ok_or("the manifest carries the patch")?;
    // The patch served rebuilds the new image from the old one.
    let patch = api.get(&format!("/v1/artifacts/{}", mota_backend::blobs::hex(&d.patch_sha256.0)), &api.viewer).await?;
    assert_eq!(patch.body.len() as u32, d.patch_size);
    assert_eq!(mota_delta::encode::apply(&v1, &patch.body).map_err(|e| format!("{e:?}"))?, v2);
    // A device at counter 2 takes it (an equal counter: MCUboot's rule); one at 3
    // refuses it as a downgrade: the counter is the version's.
    let at_two = DevicePolicy { security_counter: 2, ..policy };
    assert!(mota_proto::verify(&envelope, &[root], &at_two).is_ok());
    let at_three = DevicePolicy { security_counter: 3, ..policy };
    let refused = mota_proto::verify(&envelope, &[root], &at_three);
    assert_eq!(refused.err(), Some(mota_proto::VerifyError::Downgrade { offered: 2, current: 3 }));
    // Without a base (or an unknown one), the full image.
    let full =
        api.json("POST", "/v1/models/digits/versions/1.1.0/manifests", &api.operator, serde_json::json!({})).await?;
    assert!(full.json()["delta"].is_null());
    let unknown = serde_json::json!({ "base_sha256": "ab".repeat(32) });
    let other = api.json("POST", "/v1/models/digits/versions/1.1.0/manifests", &api.operator, unknown).await?;
    assert_eq!(other.json()["delta_state"], "unknown_base");
    Ok(())
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

#[tokio::test]
async fn a_validation_set_is_evaluated_and_its_rule_checked() -> TestResult {
    let api = Api::new().await?;
    let set = digits_set(64)?;
    let r = api.post_bytes("/v1/validation-sets?name=digits-64", &api.operator, set.clone()).await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!((r.json()["records"].as_i64(), r.json()["classes"].as_i64()), (Some(64), Some(10)));
    let set_sha = r.json()["sha256"].as_str().unwrap_or_default().to_owned();
    let again = api.post_bytes("/v1/validation-sets?name=digits-64", &api.operator, set).await?;
    assert_eq!(again.json()["sha256"], set_sha.as_str(), "the same bytes are the same set");

    let r = api.upload("digits", "1.0.0", model("digits_cnn_v1")?, &format!("&validation_set={set_sha}")).await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let accuracy = r.json()["accuracy_permille"].as_i64().unwrap_or(0);
    assert!(accuracy > 800, "digits v1 scores {accuracy}‰");
    assert_eq!(r.json()["min_accuracy_permille"].as_i64(), Some(accuracy), "by default devices must reproduce it");

    // A bad model cannot promise what it does not score: refused, nothing stored.
    let before = api.footprint().await?;
    let r = api
        .upload(
            "digits",
            "1.1.0",
            model("digits_cnn_v3_bad")?,
            &format!("&validation_set={set_sha}&min_accuracy_permille=900"),
        )
        .await?;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "rule".into()), "{}", r.json());
    assert_eq!(api.footprint().await?, before);
    let r =
        api.upload("digits", "1.1.0", model("digits_cnn_v2")?, &format!("&validation_set={}", "0".repeat(64))).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(api.footprint().await?, before);
    Ok(())
}

#[tokio::test]
async fn a_multipart_upload_carries_the_model_and_its_set() -> TestResult {
    let api = Api::new().await?;
    let boundary = "mota-test-boundary";
    let mut body = Vec::new();
    let mut part = |name: &str, file: Option<&str>, bytes: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            body.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part("model", Some("digits.tflite"), &model("digits_cnn_v1")?);
    part("validation_set_file", Some("digits-32.vset"), &digits_set(32)?);
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = api
        .send(
            Request::post("/v1/models/digits/versions?version=2.0.0&device_class=mcu")
                .header(header::AUTHORIZATION, format!("Bearer {}", api.operator))
                .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
                .body(Body::from(body))?,
        )
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert!(r.json()["accuracy_permille"].as_i64().is_some());
    let sets = api.get("/v1/validation-sets", &api.viewer).await?.json();
    assert_eq!(sets["items"][0]["name"], "digits-32.vset");
    Ok(())
}

/// The model with its first operator code changed to one no runtime knows.
fn unsupported_op_model() -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    use mota_runtime::flatbuffer::Table;
    let mut m = model("digits_mlp")?;
    let code = |m: &[u8], field| -> Option<usize> {
        Table::root(m).ok()?.vector(1).ok()??.table(0).ok()?.field_position(field).ok()?
    };
    let deprecated = code(&m, 0).ok_or("operator code")?;
    m[deprecated] = 127;
    let builtin = code(&m, 3).ok_or("builtin code")?;
    m[builtin..builtin + 4].copy_from_slice(&200i32.to_le_bytes());
    Ok(m)
}

#[tokio::test]
async fn bad_uploads_get_their_4xx_and_leave_nothing() -> TestResult {
    let api = Api::with(|c| c.max_model_bytes = 200_000).await?;
    let good = model("digits_cnn_v1")?;
    assert_eq!(api.upload("digits", "1.0.0", good.clone(), "").await?.status, StatusCode::CREATED);
    let before = api.footprint().await?;
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode, &str)> = vec![
        ("truncated", good[..good.len() / 3].to_vec(), "1.1.0", StatusCode::UNPROCESSABLE_ENTITY, "unusable"),
        ("not a model", b"GIF89a not a flatbuffer".to_vec(), "1.1.0", StatusCode::UNPROCESSABLE_ENTITY, "unusable"),
        ("empty", Vec::new(), "1.1.0", StatusCode::UNPROCESSABLE_ENTITY, "unusable"),
        ("unsupported op", unsupported_op_model()?, "1.1.0", StatusCode::UNPROCESSABLE_ENTITY, "unusable"),
        ("oversize", vec![0u8; 200_001], "1.1.0", StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ("duplicate", good.clone(), "1.0.0", StatusCode::CONFLICT, "duplicate_version"),
        ("bad version", good.clone(), "1.0.0%2Fx", StatusCode::BAD_REQUEST, "invalid"),
        ("no version", good.clone(), "", StatusCode::BAD_REQUEST, "invalid"),
    ];
    for (what, bytes, version, status, code) in cases {
        let r = api.upload("digits", version, bytes, "").await?;
        assert_eq!((r.status, r.code()), (status, code.to_owned()), "{what}: {}", r.json());
        assert_eq!(api.footprint().await?, before, "{what} left something behind");
    }
    let r = api
        .post_bytes("/v1/models/digits/versions?version=3.0.0&device_class=other", &api.operator, good.clone())
        .await?;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "class_mismatch".to_owned()));
    let r = api.post_bytes("/v1/models/fresh/versions?version=1.0.0", &api.operator, good.clone()).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a new model needs its class");
    let wrong_type = api
        .send(
            Request::post("/v1/models/digits/versions?version=4.0.0")
                .header(header::AUTHORIZATION, format!("Bearer {}", api.operator))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(good.clone()))?,
        )
        .await?;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let not_a_set = api.post_bytes("/v1/validation-sets?name=x", &api.operator, good.clone()).await?;
    assert_eq!(not_a_set.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Tokens: none, unknown, and too weak.
    for (token, status) in [("", StatusCode::UNAUTHORIZED), ("mota_0000", StatusCode::UNAUTHORIZED)] {
        let r = api.post_bytes("/v1/models/digits/versions?version=5.0.0", token, good.clone()).await?;
        assert_eq!((r.status, r.code().is_empty()), (status, false));
    }
    let r = api.post_bytes("/v1/models/digits/versions?version=5.0.0", &api.viewer, good.clone()).await?;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden".to_owned()));
    assert_eq!(api.footprint().await?, before, "no refusal left anything behind");
    for uri in ["/v1/models/nope", "/v1/models/nope/versions", "/v1/models/digits/versions/9.9.9", "/v1/nothing"] {
        let r = api.get(uri, &api.viewer).await?;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found".to_owned()), "{uri}");
    }
    let r = api.get(&format!("/v1/artifacts/{}", "0".repeat(64)), &api.viewer).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/v1/artifacts/xyz", &api.viewer).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn versions_page_newest_first_and_uploads_are_audited() -> TestResult {
    let api = Api::new().await?;
    let image = model("digits_cnn_v1")?;
    // The same image under several versions: distinct versions, one blob.
    for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"] {
        assert_eq!(api.upload("digits", v, image.clone(), "").await?.status, StatusCode::CREATED);
    }
    assert_eq!(api.count("artifacts").await?, 1);
    let mut seen = Vec::new();
    let mut uri = "/v1/models/digits/versions?limit=2".to_owned();
    loop {
        let page = api.get(&uri, &api.viewer).await?.json();
        for item in page["items"].as_array().into_iter().flatten() {
            seen.push(item["version"].as_str().unwrap_or_default().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/models/digits/versions?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["1.0.4", "1.0.3", "1.0.2", "1.0.1", "1.0.0"]);
    let events = api.get("/v1/events?kind=version.created&limit=500", &api.viewer).await?.json();
    let items = events["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 5);
    assert_eq!(
        (items[0]["subject"].as_str(), items[0]["actor"].as_str()),
        (Some("model:digits/1.0.4"), Some("token:Operator"))
    );
    let bad = api.get("/v1/models/digits/versions?limit=0", &api.viewer).await?;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "bad_query".to_owned()));
    Ok(())
}

#[tokio::test]
async fn manifest_requests_are_checked() -> TestResult {
    let api = Api::new().await?;
    api.upload("digits", "1.0.0", model("digits_cnn_v1")?, "").await?;
    let uri = "/v1/models/digits/versions/1.0.0/manifests";
    let cases = [
        (serde_json::json!({ "expires_at": 1000 }), StatusCode::BAD_REQUEST, "past expiry"),
        (serde_json::json!({ "expires_at": 1u64 << 60 }), StatusCode::BAD_REQUEST, "beyond 2^53"),
        (serde_json::json!({ "rollout_id": 42 }), StatusCode::NOT_FOUND, "unknown rollout"),
        (serde_json::json!({ "base_sha256": "xyz" }), StatusCode::BAD_REQUEST, "not a digest"),
        (serde_json::json!({ "colour": "red" }), StatusCode::BAD_REQUEST, "unknown field"),
    ];
    for (body, status, what) in cases {
        let r = api.json("POST", uri, &api.operator, body).await?;
        assert_eq!(r.status, status, "{what}: {}", r.json());
    }
    let r =
        api.json("POST", "/v1/models/digits/versions/9.9.9/manifests", &api.operator, serde_json::json!({})).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.json("POST", uri, &api.viewer, serde_json::json!({})).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "signing needs an operator");
    assert_eq!(api.count("offers").await?, 0, "nothing signed by a refused request");
    let future = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()) + 3600;
    let a = api.json("POST", uri, &api.operator, serde_json::json!({ "expires_at": future })).await?;
    let b = api.json("POST", uri, &api.operator, serde_json::json!({ "expires_at": future as f64 })).await?;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["envelope_hex"], b.json()["envelope_hex"], "deterministic: one offer per request");
    assert_eq!(api.count("offers").await?, 1);
    Ok(())
}

#[tokio::test]
async fn until_its_delta_is_computed_a_manifest_carries_the_full_image() -> TestResult {
    let api = Api::new().await?;
    let (kws, finetuned) =
        (std::fs::read(pair("kws_dscnn/finetune/old.tflite"))?, std::fs::read(pair("kws_dscnn/finetune/new.tflite"))?);
    api.upload("kws", "1.0.0", kws.clone(), "").await?;
    api.upload("kws", "1.1.0", finetuned.clone(), "").await?;
    let base = serde_json::json!({ "base_sha256": mota_backend::blobs::hex(&mota_proto::Digest::of(&kws).0) });
    let uri = "/v1/models/kws/versions/1.1.0/manifests";
    let early = api.json("POST", uri, &api.operator, base.clone()).await?.json();
    assert_eq!((early["delta"].is_null(), early["delta_state"].as_str()), (true, Some("pending")));
    assert_eq!(api.state.registry.run_delta_jobs().await?, 1);
    assert_eq!(api.state.registry.run_delta_jobs().await?, 0, "a job runs once");
    let late = api.json("POST", uri, &api.operator, base).await?.json();
    let patch = late["delta"]["patch"]["size"].as_u64().unwrap_or(u64::MAX);
    assert!(patch * 3 < finetuned.len() as u64, "a fine-tune patch of {patch} B for {} B", finetuned.len());
    assert_ne!(early["manifest_sha256"], late["manifest_sha256"]);
    let events = api.get("/v1/events?kind=delta.done", &api.viewer).await?.json();
    assert_eq!(events["items"][0]["actor"], "backend");
    Ok(())
}

fn pair(path: &str) -> String {
    format!("{}/../agent/delta/bench/pairs/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_raising_uploads_of_a_model_get_distinct_counters() -> TestResult {
    let api = std::sync::Arc::new(Api::new().await?);
    let image = model("digits_cnn_v1")?;
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let (api, image) = (api.clone(), image.clone());
            tokio::spawn(async move { api.upload("digits", &format!("1.0.{i}"), image, "&raise_counter=true").await })
        })
        .collect();
    let mut counters = Vec::new();
    for u in uploads {
        let r = u.await??;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        counters.push(r.json()["security_counter"].as_i64().unwrap_or(0));
    }
    counters.sort_unstable();
    assert_eq!(counters, (1..=8).collect::<Vec<i64>>());
    Ok(())
}

/// MCUboot's semantics: a push keeps the model's counter unless it asks to raise it.
#[tokio::test]
async fn a_push_keeps_the_counter_unless_it_asks_to_raise_it() -> TestResult {
    let api = Api::new().await?;
    let image = model("digits_cnn_v1")?;
    let pushes = [
        ("1.0.0", "", 1, true),
        ("1.0.1", "", 1, false),
        ("1.0.2", "&raise_counter=true", 2, true),
        ("1.0.3", "&raise_counter=false", 2, false),
        ("1.0.4", "", 2, false),
    ];
    for (version, extra, counter, raised) in pushes {
        let r = api.upload("digits", version, image.clone(), extra).await?;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        assert_eq!(
            (r.json()["security_counter"].as_i64(), r.json()["raised_counter"].as_bool()),
            (Some(counter), Some(raised)),
            "{version}"
        );
    }
    let before = api.footprint().await?;
    let bad = api.upload("digits", "1.0.5", image.clone(), "&raise_counter=yes").await?;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "bad_query".to_owned()));
    assert_eq!(api.footprint().await?, before, "a refused push leaves nothing");
    assert_eq!(api.get("/v1/models/digits", &api.viewer).await?.json()["security_counter"], 2);

    // Listed newest first, a page at a time, though counters repeat.
    let mut seen = Vec::new();
    let mut uri = "/v1/models/digits/versions?limit=1".to_owned();
    loop {
        let page = api.get(&uri, &api.viewer).await?.json();
        for v in page["items"].as_array().into_iter().flatten() {
            let version = v["version"].as_str().unwrap_or_default().to_owned();
            seen.push((version, v["security_counter"].as_i64().unwrap_or(0), v["raised_counter"].as_bool()));
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/models/digits/versions?limit=1&after={next}"),
            None => break,
        }
    }
    let expected: Vec<_> =
        pushes.iter().rev().map(|(v, _, counter, raised)| ((*v).to_owned(), *counter, Some(*raised))).collect();
    assert_eq!(seen, expected);

    // Delta bases are the most recent versions by registration (3 by default), whatever
    // their counters: 1.0.4's are 1.0.3, 1.0.2 and 1.0.1, not 1.0.0.
    let v = api.get("/v1/models/digits/versions/1.0.4", &api.viewer).await?.json();
    let bases: Vec<_> =
        v["deltas"].as_array().into_iter().flatten().filter_map(|d| d["base_version"].as_str()).collect();
    assert_eq!(bases, ["1.0.3", "1.0.2", "1.0.1"]);

    // A model's first version gets 1, raised or not; the audit log says what was asked.
    let r = api.upload("other", "1.0.0", image.clone(), "&raise_counter=true").await?;
    assert_eq!((r.json()["security_counter"].as_i64(), r.json()["raised_counter"].as_bool()), (Some(1), Some(true)));
    let events = api.get("/v1/events?kind=version.created&limit=500", &api.viewer).await?.json();
    let raised: Vec<_> =
        events["items"].as_array().into_iter().flatten().map(|e| e["detail"]["raise_counter"].as_bool()).collect();
    assert_eq!(raised, [Some(true), Some(false), Some(false), Some(true), Some(false), Some(false)]);
    Ok(())
}
