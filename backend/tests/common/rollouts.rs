//! Rollout helpers: waiting for a fleet and a rollout, reading attempts and events.

use serde_json::Value;

use super::{Api, Backend, BoxError, Reply, digits_set, eventually, model};

/// Waits until `count` devices `{prefix}…` have said hello.
pub async fn registered(api: &Api, prefix: &str, count: usize) -> Result<(), BoxError> {
    eventually(60, "the fleet to register", || async {
        // Registered, not necessarily shown online: with two replicas a device's hello and
        // the will of its previous connection may be handled in either order.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id LIKE $1 AND agent_version IS NOT NULL")
            .bind(format!("{prefix}%"))
            .fetch_one(&api.state.db.pool)
            .await?;
        Ok((n as usize == count).then_some(()))
    })
    .await
}

/// `GET /v1/rollouts/{id}`.
pub async fn rollout(api: &Api, id: i64) -> Result<Value, BoxError> {
    Ok(api.get(&format!("/v1/rollouts/{id}"), &api.viewer).await?.json())
}

/// Polls the rollout until its state is `wanted`; the view then.
pub async fn wait_state(api: &Api, id: i64, secs: u64, wanted: &str) -> Result<Value, BoxError> {
    let mut last = Value::Null;
    for _ in 0..secs * 10 {
        last = rollout(api, id).await?;
        if last["state"] == wanted {
            return Ok(last);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!("rollout {id} never became {wanted}; last {last:#}").into())
}

/// (device, cohort position, state, delta) of every attempt, by device.
pub async fn attempts(api: &Api, id: i64) -> Result<Vec<(String, i32, String, Option<i32>)>, BoxError> {
    Ok(sqlx::query_as(
        "SELECT a.device_id, c.position, a.state, a.delta FROM attempts a JOIN cohorts c ON c.id = a.cohort_id \
         WHERE a.rollout_id = $1 ORDER BY a.device_id",
    )
    .bind(id)
    .fetch_all(&api.state.db.pool)
    .await?)
}

/// (id, kind, detail) of the rollout's audit events, in order.
pub async fn events(api: &Api, id: i64) -> Result<Vec<(i64, String, String)>, BoxError> {
    Ok(sqlx::query_as("SELECT id, kind, detail FROM events WHERE subject = $1 ORDER BY id")
        .bind(format!("rollout:{id}"))
        .fetch_all(&api.state.db.pool)
        .await?)
}

/// The id of a rollout a `201` created.
pub fn created(r: &Reply) -> Result<i64, BoxError> {
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_i64().ok_or_else(|| "no rollout id".into())
}

/// A server with MQTT on, the digits validation set and `versions` uploaded with it
/// (`(version, fixture, extra query)`), deltas computed; the broker's address and the
/// configuration (for a second replica).
pub async fn setup(
    tag: &str,
    versions: &[(&str, &str, &str)],
) -> Result<(Api, Backend, (String, u16), mota_backend::Config), BoxError> {
    let mut chosen = None;
    let api = Api::with(|c| chosen = Some((super::broker(c, tag), c.clone()))).await?;
    let (address, config) = chosen.ok_or("no configuration")?;
    let address = address?;
    let backend = Backend::start(&config, &api).await?;
    upload(&api, versions).await?;
    Ok((api, backend, address, config))
}

/// Uploads the digits validation set and `versions` with it (`(version, fixture, extra
/// query)`) and computes the deltas. No version raises the security counter, so every
/// one stays a rollback target of the next.
pub async fn upload(api: &Api, versions: &[(&str, &str, &str)]) -> Result<(), BoxError> {
    let r = api.post_bytes("/v1/validation-sets?name=digits-64", &api.operator, digits_set(64)?).await?;
    let set = r.json()["sha256"].as_str().ok_or("no set digest")?.to_owned();
    for (version, fixture, extra) in versions {
        let query = format!("&validation_set={set}{extra}");
        let r = api.upload("digits", version, model(fixture)?, &query).await?;
        assert_eq!(r.status, 201, "{version}: {}", String::from_utf8_lossy(&r.body));
    }
    api.state.registry.run_delta_jobs().await?;
    Ok(())
}
