//! Devices, the audit log, metrics and the error body, through the router in memory (on
//! PostgreSQL too when `MOTA_TEST_POSTGRES` is set).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Api, TestResult};
use serde_json::json;

#[tokio::test]
async fn devices_are_registered_filtered_tagged_and_paged() -> TestResult {
    let api = Api::new().await?;
    for i in 0..7 {
        let class = if i % 2 == 0 { "m4" } else { "m7" };
        let tags = if i < 3 { vec!["canary"] } else { vec![] };
        let r = api
            .json(
                "POST",
                "/v1/devices",
                &api.operator,
                json!({ "id": format!("dev-{i}"), "device_class": class, "tags": tags }),
            )
            .await?;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    }
    let dup = api.json("POST", "/v1/devices", &api.operator, json!({ "id": "dev-0", "device_class": "m4" })).await?;
    assert_eq!((dup.status, dup.code()), (StatusCode::CONFLICT, "exists".to_owned()));
    let bad = api.json("POST", "/v1/devices", &api.operator, json!({ "id": "a/b", "device_class": "m4" })).await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "an id must be a safe topic level");

    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"].as_array().into_iter().flatten().filter_map(|d| d["id"].as_str().map(str::to_owned)).collect()
    };
    let m4 = api.get("/v1/devices?class=m4", &api.viewer).await?.json();
    assert_eq!(ids(&m4), ["dev-0", "dev-2", "dev-4", "dev-6"]);
    let canary_m4 = api.get("/v1/devices?class=m4&tag=canary", &api.viewer).await?.json();
    assert_eq!(ids(&canary_m4), ["dev-0", "dev-2"]);
    assert_eq!(canary_m4["items"][0]["tags"], json!(["canary"]));

    let tagged = api.json("PUT", "/v1/devices/dev-5/tags/lab", &api.operator, json!(null)).await?;
    assert_eq!(tagged.json()["tags"], json!(["lab"]));
    let again = api.json("PUT", "/v1/devices/dev-5/tags/lab", &api.operator, json!(null)).await?;
    assert_eq!(again.status, StatusCode::OK, "tagging is idempotent");
    assert_eq!(ids(&api.get("/v1/devices?tag=lab", &api.viewer).await?.json()), ["dev-5"]);
    let untagged = api.json("DELETE", "/v1/devices/dev-5/tags/lab", &api.operator, json!(null)).await?;
    assert_eq!(untagged.json()["tags"], json!([]));
    let missing = api.json("PUT", "/v1/devices/nope/tags/lab", &api.operator, json!(null)).await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let viewer = api.json("PUT", "/v1/devices/dev-5/tags/lab", &api.viewer, json!(null)).await?;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);

    let mut all = Vec::new();
    let mut uri = "/v1/devices?limit=3".to_owned();
    loop {
        let page = api.get(&uri, &api.viewer).await?.json();
        assert!(page["items"].as_array().map_or(0, Vec::len) <= 3);
        all.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/devices?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 7, "{all:?}");

    let events = api.get("/v1/events?subject=device:dev-5", &api.viewer).await?.json();
    let kinds: Vec<&str> =
        events["items"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["device.untagged", "device.tagged", "device.provisioned"], "newest first, one per change");
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_the_error_body() -> TestResult {
    let api = Api::new().await?;
    let not_json = api
        .send(
            Request::post("/v1/devices")
                .header(header::AUTHORIZATION, format!("Bearer {}", api.operator))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"id\": "))?,
        )
        .await?;
    assert_eq!((not_json.status, not_json.code()), (StatusCode::BAD_REQUEST, "bad_json".to_owned()));
    let no_type = api
        .send(
            Request::post("/v1/devices")
                .header(header::AUTHORIZATION, format!("Bearer {}", api.operator))
                .body(Body::from("{}"))?,
        )
        .await?;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown_field =
        api.json("POST", "/v1/devices", &api.operator, json!({ "id": "d", "device_class": "c", "x": 1 })).await?;
    assert_eq!((unknown_field.status, unknown_field.code()), (StatusCode::BAD_REQUEST, "bad_json".to_owned()));
    let array = api.json("POST", "/v1/devices", &api.operator, json!([])).await?;
    assert_eq!(
        (array.status, array.code()),
        (StatusCode::BAD_REQUEST, "bad_json".to_owned()),
        "an object, not an array"
    );
    let bad_query = api.get("/v1/devices?limit=many", &api.viewer).await?;
    assert_eq!((bad_query.status, bad_query.code()), (StatusCode::BAD_REQUEST, "bad_query".to_owned()));
    let no_token = api.send(Request::get("/v1/devices").body(Body::empty())?).await?;
    assert_eq!((no_token.status, no_token.code()), (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_by_route() -> TestResult {
    let api = Api::new().await?;
    for _ in 0..3 {
        api.get("/v1/devices/some-device", &api.viewer).await?;
    }
    let text = String::from_utf8(api.send(Request::get("/metrics").body(Body::empty())?).await?.body)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("mota_http_requests_total") && l.contains("/v1/devices/{id}") && l.contains("404"))
        .ok_or_else(|| format!("no request counter in:\n{text}"))?;
    assert!(line.ends_with(" 3"), "{line}");
    assert!(text.contains("mota_http_request_duration_seconds_bucket"));
    Ok(())
}

#[tokio::test]
async fn admins_create_and_revoke_tokens() -> TestResult {
    let api = Api::new().await?;
    let r = api.json("POST", "/v1/tokens", &api.operator, json!({ "name": "ci", "role": "viewer" })).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "only admins manage tokens");
    let r = api.json("POST", "/v1/tokens", &api.admin, json!({ "name": "ci", "role": "viewer" })).await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let (id, secret) =
        (r.json()["id"].as_i64().unwrap_or(-1), r.json()["secret"].as_str().unwrap_or_default().to_owned());
    assert_eq!(api.get("/v1/whoami", &secret).await?.json()["role"], "viewer");
    let listed = api.get("/v1/tokens", &api.admin).await?.json();
    assert!(listed.as_array().is_some_and(|l| l.iter().all(|t| t.get("secret").is_none())), "secrets are never listed");
    let revoked = api.json("DELETE", &format!("/v1/tokens/{id}"), &api.admin, json!(null)).await?;
    assert!(revoked.json()["revoked_at"].is_i64());
    assert_eq!(api.get("/v1/whoami", &secret).await?.status, StatusCode::UNAUTHORIZED, "revoked at once");
    let bad_role = api.json("POST", "/v1/tokens", &api.admin, json!({ "name": "x", "role": "root" })).await?;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.json("DELETE", "/v1/tokens/999", &api.admin, json!(null)).await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

/// Expiry and last use are judged by the control plane's clock, driven by hand here.
#[tokio::test]
async fn tokens_expire_and_record_their_last_use_once_a_minute() -> TestResult {
    use mota_backend::db::Clock;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let mut api = Api::new().await?;
    let t0: i64 = 1_800_000_000_000;
    let clock = Arc::new(AtomicI64::new(t0));
    api.state.db = api.state.db.clone().with_clock(Clock::Manual(clock.clone()));
    api.router = mota_backend::server::router(api.state.clone(), 1 << 20);
    let api = &api;
    let create = async |body: serde_json::Value| api.json("POST", "/v1/tokens", &api.admin, body).await;

    let hour = 3_600_000;
    let r = create(json!({ "name": "short", "role": "viewer", "expires_at": t0 + hour })).await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!((r.json()["expires_at"].as_i64(), r.json()["created_at"].as_i64()), (Some(t0 + hour), Some(t0)));
    assert!(r.json()["last_used_at"].is_null());
    let (short_id, short) =
        (r.json()["id"].as_i64().unwrap_or(-1), r.json()["secret"].as_str().unwrap_or("").to_owned());
    let r = create(json!({ "name": "forever", "role": "viewer" })).await?;
    assert!(r.json()["expires_at"].is_null(), "{}", r.json());
    let forever = r.json()["secret"].as_str().unwrap_or("").to_owned();
    for past in [t0, t0 - 1, 9_007_199_254_740_992] {
        let r = create(json!({ "name": "x", "role": "viewer", "expires_at": past })).await?;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "invalid".to_owned()), "{past}");
    }
    let listed = |id: i64| async move {
        let tokens = api.get("/v1/tokens", &api.admin).await?.json();
        let token = tokens.as_array().and_then(|l| l.iter().find(|t| t["id"] == id).cloned());
        Ok::<_, common::BoxError>(token.unwrap_or_default())
    };
    assert!(listed(short_id).await?["last_used_at"].is_null(), "not used yet");

    // A use is recorded, then not again within the minute, then again after it.
    assert_eq!(api.get("/v1/whoami", &short).await?.status, StatusCode::OK);
    assert_eq!(listed(short_id).await?["last_used_at"].as_i64(), Some(t0));
    clock.store(t0 + 59_999, Ordering::SeqCst);
    assert_eq!(api.get("/v1/whoami", &short).await?.status, StatusCode::OK);
    assert_eq!(listed(short_id).await?["last_used_at"].as_i64(), Some(t0), "at most one write a minute");
    clock.store(t0 + 60_000, Ordering::SeqCst);
    assert_eq!(api.get("/v1/whoami", &short).await?.status, StatusCode::OK);
    assert_eq!(listed(short_id).await?["last_used_at"].as_i64(), Some(t0 + 60_000));

    // At its expiry the token is refused as expired, not as unknown; others still work.
    clock.store(t0 + hour, Ordering::SeqCst);
    let expired = api.get("/v1/whoami", &short).await?;
    assert_eq!((expired.status, expired.code()), (StatusCode::UNAUTHORIZED, "token_expired".to_owned()));
    assert!(expired.json()["error"]["message"].as_str().is_some_and(|m| m.contains("2027-01-15T09:00:00Z")));
    assert_eq!(listed(short_id).await?["last_used_at"].as_i64(), Some(t0 + 60_000), "a refusal is no use");
    assert_eq!(api.get("/v1/whoami", &forever).await?.status, StatusCode::OK, "no expiry: valid");
    let unknown = api.get("/v1/whoami", "mota_0000").await?;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));

    // Revoked stays revoked (`unauthorized`), expired or not.
    api.json("DELETE", &format!("/v1/tokens/{short_id}"), &api.admin, json!(null)).await?;
    let revoked = api.get("/v1/whoami", &short).await?;
    assert_eq!((revoked.status, revoked.code()), (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));
    Ok(())
}
