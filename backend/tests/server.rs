//! The server on embedded defaults (SQLite in a temporary data dir), started for real on
//! port 0; and the schema on SQLite always and on PostgreSQL when `MOTA_TEST_POSTGRES`
//! holds a URL (CI starts one).

mod common;

use mota_backend::db::{Db, Engine};
use mota_backend::tokens::{self, Role};
use mota_backend::{Config, run};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TABLES: [&str; 16] = [
    "api_tokens",
    "signing_keys",
    "artifacts",
    "models",
    "model_versions",
    "deltas",
    "devices",
    "device_tags",
    "rollouts",
    "cohorts",
    "offers",
    "attempts",
    "device_reports",
    "events",
    "validation_sets",
    "delta_jobs",
];

#[tokio::test]
async fn the_server_starts_on_embedded_defaults_and_is_ready() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (base, stop, server) = start(&dir.path().join("data")).await?;
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"), "every response carries a request id");
    let ready = client.get(format!("{base}/readyz")).send().await?;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await?["status"], "ready");
    assert!(dir.path().join("data/mota.db").exists(), "the SQLite file lives in the data dir");
    let _ = stop.send(());
    server.await??;
    Ok(())
}

async fn tables(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let sql = match db.engine {
        Engine::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        Engine::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        }
    };
    let rows = sqlx::query_scalar::<_, String>(sql).fetch_all(&db.pool).await?;
    Ok(rows)
}

async fn schema_on(url: &str) -> TestResult {
    let db = Db::connect(url).await?;
    db.migrate().await?;
    db.migrate().await?; // idempotent
    let found = tables(&db).await?;
    for t in TABLES {
        assert!(found.iter().any(|f| f == t), "{t} missing on {:?}: {found:?}", db.engine);
    }
    // A report stored twice under its key counts once.
    let insert = "INSERT INTO device_reports (device_id, rollout_id, seq, event, payload, received_at) \
                  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
    for _ in 0..2 {
        sqlx::query(insert)
            .bind("dev-1")
            .bind(7_i64)
            .bind(3_i64)
            .bind(4_i32)
            .bind(vec![1u8, 2, 3])
            .bind(1_i64)
            .execute(&db.pool)
            .await?;
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_reports WHERE device_id = $1")
        .bind("dev-1")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(n, 1);
    sqlx::query("DELETE FROM device_reports WHERE device_id = $1").bind("dev-1").execute(&db.pool).await?;
    Ok(())
}

#[tokio::test]
async fn the_schema_migrates_once_on_sqlite() -> TestResult {
    let dir = tempfile::tempdir()?;
    schema_on(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await
}

#[tokio::test]
async fn the_schema_migrates_once_on_postgres_when_configured() -> TestResult {
    let Ok(url) = std::env::var("MOTA_TEST_POSTGRES") else {
        eprintln!("MOTA_TEST_POSTGRES not set: PostgreSQL is covered by .ci/run");
        return Ok(());
    };
    schema_on(&url).await
}

#[test]
fn an_unknown_database_engine_is_refused() {
    assert!(Engine::of("mysql://x").is_err());
    assert_eq!(Engine::of("postgresql://x").ok(), Some(Engine::Postgres));
}

/// Starts the server in `dir`; returns its base URL and the stop handle.
async fn start(
    dir: &std::path::Path,
) -> Result<
    (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), mota_backend::server::ServerError>>),
    Box<dyn std::error::Error>,
> {
    start_with(Config::embedded(dir.to_path_buf())).await
}

type Started =
    (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), mota_backend::server::ServerError>>);

async fn start_with(config: Config) -> Result<Started, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(config, listener, async {
        let _ = stopped.await;
    }));
    for _ in 0..100 {
        if server.is_finished() {
            return Err(format!("the server stopped: {:?}", server.await?).into());
        }
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            return Ok((base, stop, server));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err("the server never answered".into())
}

#[tokio::test]
async fn tokens_authenticate_and_carry_their_role() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (base, stop, server) = start(dir.path()).await?;
    let db = Db::connect(&Config::embedded(dir.path().to_path_buf()).database_url()).await?;
    let viewer = tokens::create(&db, "ci", Role::Viewer, 1).await?;
    assert!(viewer.starts_with(tokens::PREFIX));
    let client = reqwest::Client::new();
    let whoami = |token: Option<&str>| {
        let mut r = client.get(format!("{base}/v1/whoami"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let anonymous = whoami(None).await?;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.json::<serde_json::Value>().await?["error"]["code"], "unauthorized");
    assert_eq!(whoami(Some("mota_0000")).await?.status(), 401, "unknown token");
    assert_eq!(whoami(Some(&viewer[1..])).await?.status(), 401, "mangled token");
    let ok = whoami(Some(&viewer)).await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<serde_json::Value>().await?["role"], "viewer");
    // Only the hash is stored.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE token_hash = $1")
        .bind(&viewer)
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(stored, 0);
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[test]
fn token_create_prints_the_token_alone_on_its_last_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["token", "create", "--role", "admin"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout)?;
    let last = stdout.lines().last().ok_or("no output")?;
    assert!(last.starts_with(tokens::PREFIX) && last.len() == tokens::PREFIX.len() + 64, "{last}");
    Ok(())
}

async fn keys_seen(base: &str, token: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let r = reqwest::Client::new().get(format!("{base}/v1/keys")).bearer_auth(token).send().await?;
    assert_eq!(r.status(), 200);
    Ok(r.json::<serde_json::Value>().await?["release"].clone())
}

#[tokio::test]
async fn a_development_key_is_made_on_first_start_and_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (base, stop, server) = start(dir.path()).await?;
    let db = Db::connect(&Config::embedded(dir.path().to_path_buf()).database_url()).await?;
    let token = tokens::create(&db, "t", Role::Viewer, 1).await?;
    let first = keys_seen(&base, &token).await?;
    assert_eq!(first["development"], true);
    for f in ["dev-root.key.pem", "dev-root.pub.pem", "release.key.pem", "release.cert.pem"] {
        assert!(dir.path().join("keys").join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys/release.key.pem"))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are readable by their owner only");
    }
    let _ = stop.send(());
    server.await??;
    let (base, stop, server) = start(dir.path()).await?;
    assert_eq!(keys_seen(&base, &token).await?["key_id"], first["key_id"], "kept across restarts");
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[tokio::test]
async fn a_release_key_from_files_is_used_and_a_mismatched_pair_refused() -> TestResult {
    use mota_proto::keys::{certificate_pem, generate, private_key_pem};
    let dir = tempfile::tempdir()?;
    let root = generate()?;
    let release = generate()?;
    let cert = mota_proto::sign::certify(&root, &release.verifying_key(), u64::MAX / 2, 0..=1000)?;
    let (key_file, cert_file, other_file) =
        (dir.path().join("r.key.pem"), dir.path().join("r.cert.pem"), dir.path().join("o.key.pem"));
    std::fs::write(&key_file, private_key_pem(&release)?)?;
    std::fs::write(&cert_file, certificate_pem(&cert)?)?;
    std::fs::write(&other_file, private_key_pem(&generate()?)?)?;
    let mut config = Config::embedded(dir.path().join("data"));
    config.release_key = Some(key_file);
    config.release_cert = Some(cert_file.clone());
    let (base, stop, server) = start_with(config.clone()).await?;
    let db = Db::connect(&config.database_url()).await?;
    let token = tokens::create(&db, "t", Role::Viewer, 1).await?;
    let seen = keys_seen(&base, &token).await?;
    assert_eq!(seen["development"], false);
    assert_eq!(seen["key_id"], mota_proto::KeyId::of(release.verifying_key().as_bytes()).to_string());
    assert!(!dir.path().join("data/keys").exists(), "no development key is made");
    let _ = stop.send(());
    server.await??;
    let mut other_key = config.clone();
    other_key.release_key = Some(other_file);
    assert!(start_with(other_key).await.is_err(), "a key that does not match its certificate is refused");

    // With the root's public key: a certificate of another root is refused at start...
    let (root_file, wrong_root_file) = (dir.path().join("root.pub.pem"), dir.path().join("wrong.pub.pem"));
    std::fs::write(&root_file, mota_proto::keys::public_key_pem(&root.verifying_key())?)?;
    std::fs::write(&wrong_root_file, mota_proto::keys::public_key_pem(&generate()?.verifying_key())?)?;
    let mut wrong_root = config.clone();
    wrong_root.root_public_key = Some(wrong_root_file);
    assert!(start_with(wrong_root).await.is_err(), "a certificate the root did not sign is refused");
    // ...and revocation lists are checked against it: a forged one (another key's
    // signature under our root's id) is refused, the root's own is taken once.
    config.root_public_key = Some(root_file);
    let (base, stop, server) = start_with(config.clone()).await?;
    let admin = tokens::create(&db, "a", Role::Admin, 1).await?;
    let upload = |bytes: Vec<u8>, token: String| {
        let url = format!("{base}/v1/revocations");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.json::<serde_json::Value>().await?))
        }
    };
    let release_id = mota_proto::KeyId::of(release.verifying_key().as_bytes());
    let forged = {
        use mota_proto::Wire;
        let list = mota_proto::sign::revoke(&generate()?, 1, &[release_id])?;
        let mut signed = mota_proto::RootSigned::parse(&list)?;
        signed.issuer = mota_proto::KeyId::of(root.verifying_key().as_bytes());
        signed.to_vec()?
    };
    let (status, body) = upload(forged, admin.clone()).await?;
    assert_eq!((status, &body["error"]["code"]), (422, &serde_json::json!("invalid_revocation")), "{body}");
    let genuine = mota_proto::sign::revoke(&root, 1, &[release_id])?;
    assert_eq!(upload(genuine.clone(), token.clone()).await?.0, 403, "admins only");
    let (status, body) = upload(genuine.clone(), admin.clone()).await?;
    assert_eq!((status, &body["revoked"]), (201, &serde_json::json!([release_id.to_string()])), "{body}");
    assert_eq!(upload(genuine, admin.clone()).await?.0, 409, "not newer");
    assert_eq!(upload(b"garbage".to_vec(), admin).await?.0, 422);
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (base, stop, server) = start(dir.path()).await?;
    let doc: serde_json::Value = reqwest::get(format!("{base}/v1/openapi.json")).await?.json().await?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    for route in ["/healthz", "/readyz", "/v1/openapi.json", "/v1/whoami", "/v1/keys"] {
        assert!(paths.contains_key(route), "{route} undocumented");
        // And it is served: no documented route is a 404.
        assert_ne!(reqwest::get(format!("{base}{route}")).await?.status(), 404, "{route}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Token expiry and last use, and the security counter's raise, are in the document.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("TokenView", "expires_at"),
        ("TokenView", "last_used_at"),
        ("NewToken", "expires_at"),
        ("VersionView", "raised_counter"),
    ] {
        assert!(schemas[schema]["properties"][field].is_object(), "{schema}.{field} undocumented");
    }
    let upload = &doc["paths"]["/v1/models/{model}/versions"]["post"]["parameters"];
    let raise = upload.as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "raise_counter"));
    assert!(raise.is_some_and(|p| p["in"] == "query"), "raise_counter undocumented: {upload}");
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[test]
fn the_two_schemas_differ_only_in_engine_types() -> TestResult {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let sqlite = std::fs::read_to_string(format!("{dir}/sqlite/0001_schema.sql"))?;
    let postgres = std::fs::read_to_string(format!("{dir}/postgres/0001_schema.sql"))?;
    let translated = sqlite
        .replace("-- The backend's schema (SQLite).", "-- The backend's schema (PostgreSQL).")
        .replace("../postgres/0001_schema.sql", "../sqlite/0001_schema.sql")
        .replace("INTEGER PRIMARY KEY,", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,")
        .replace(" BLOB ", " BYTEA ")
        .replace("BLOB    NOT NULL", "BYTEA   NOT NULL");
    assert!(translated == postgres, "migrations/postgres drifted from migrations/sqlite");
    Ok(())
}

/// The real binary on `dir`, listening on a free port; its base URL.
async fn spawn_binary(dir: &std::path::Path) -> Result<(String, std::process::Child), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"))
        // The API alone: parallel tests would all want the embedded broker's port.
        .args(["--data-dir", &dir.display().to_string(), "--listen", &format!("127.0.0.1:{port}"), "--no-mqtt"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            return Ok((base, child));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err("the binary never became ready".into())
}

#[tokio::test]
async fn a_server_killed_mid_upload_shows_nothing_half_written() -> TestResult {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"))
        .args(["--data-dir", &data.display().to_string(), "token", "create", "--role", "operator"])
        .output()?;
    let token = String::from_utf8(output.stdout)?.lines().last().unwrap_or_default().to_owned();
    let image =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v1.tflite"))?;
    let (base, mut child) = spawn_binary(&data).await?;
    // Half the body, then the process dies (SIGKILL: no shutdown, no cleanup).
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await?;
    let head = format!(
        "POST /v1/models/digits/versions?version=1.0.0&device_class=mcu HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        image.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&image[..image.len() / 2]).await?;
    stream.flush().await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    child.kill()?;
    child.wait()?;
    // An upload a crash cut inside the blob store leaves only a temporary file.
    std::fs::create_dir_all(data.join("blobs/tmp"))?;
    std::fs::write(data.join("blobs/tmp/12345-0"), &image[..1000])?;

    let (base, mut child) = spawn_binary(&data).await?;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).bearer_auth(&token).send();
    let models: serde_json::Value = get("/v1/models").await?.json().await?;
    let versions = get("/v1/models/digits/versions").await?.status();
    let sha = mota_backend::blobs::hex(&mota_proto::Digest::of(&image).0);
    let artifact = get(&format!("/v1/artifacts/{sha}")).await?.status();
    let leftovers = std::fs::read_dir(data.join("blobs/tmp"))?.count();
    // And the same upload, whole, now succeeds.
    let retry = client
        .post(format!("{base}/v1/models/digits/versions?version=1.0.0&device_class=mcu"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(image.clone())
        .send()
        .await?
        .status();
    child.kill()?;
    child.wait()?;
    assert_eq!(models["items"], serde_json::json!([]));
    assert_eq!((versions.as_u16(), artifact.as_u16()), (404, 404));
    assert_eq!(leftovers, 0, "temporary files of interrupted uploads are removed at start");
    assert_eq!(retry.as_u16(), 201);
    Ok(())
}

#[test]
fn settings_come_from_flags_then_variables_then_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("mota.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:9000\"\ndelta_bases = 5\nmax_model_bytes = 1000\n",
    )?;
    let print = |extra: &[&str], env: &[(&str, &str)]| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"));
        cmd.arg("--config").arg(&file).args(extra).arg("--print-config").env_remove("MOTA_DELTA_BASES");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let c = print(&[], &[])?;
    assert_eq!(
        (c["data_dir"].as_str(), c["listen"].as_str(), c["delta_bases"].as_u64()),
        (Some("/from/file"), Some("127.0.0.1:9000"), Some(5))
    );
    let c = print(&["--delta-bases", "2"], &[("MOTA_DELTA_BASES", "7"), ("MOTA_MAX_MODEL_BYTES", "2000")])?;
    assert_eq!(
        (c["delta_bases"].as_u64(), c["max_model_bytes"].as_u64()),
        (Some(2), Some(2000)),
        "flag > variable > file"
    );

    std::fs::write(&file, "data_dri = \"/typo\"\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"))
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"data_dri\""));
    Ok(())
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() -> Result<(), common::BoxError> {
    // SQLite always; a fresh PostgreSQL database when MOTA_TEST_POSTGRES is set (there
    // sqlx holds an advisory lock while it migrates).
    let dir = tempfile::tempdir()?;
    let url = common::config(dir.path().to_path_buf()).await?.database_url();
    let replicas = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let db = Db::connect(&url).await?;
            db.migrate().await?;
            Ok::<_, mota_backend::db::DbError>(db)
        })
    });
    let mut dbs = Vec::new();
    for r in replicas.collect::<Vec<_>>() {
        dbs.push(r.await??);
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&dbs[0].pool).await?;
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))?.count() as i64;
    assert_eq!(applied, migrations, "each migration applied once");
    if dbs[0].engine == Engine::Sqlite {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&dbs[0].pool).await?;
        assert_eq!(mode, "wal", "SQLite runs with a write-ahead log");
    }
    Ok(())
}

#[tokio::test]
async fn the_running_server_computes_deltas_in_the_background() -> Result<(), common::BoxError> {
    let dir = tempfile::tempdir()?;
    let config = common::config(dir.path().join("data")).await?;
    let url = config.database_url();
    let (base, stop, server) = start_with(config).await.map_err(|e| e.to_string())?;
    let data = dir.path().join("data").display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mota-backend"))
        .args(["--data-dir", &data, "--database-url", &url, "token", "create", "--role", "operator"])
        .output()?;
    let token = String::from_utf8(out.stdout)?.lines().last().unwrap_or_default().to_owned();
    let client = reqwest::Client::new();
    for (version, file) in [("1.0.0", "digits_cnn_v1"), ("1.1.0", "digits_cnn_v2")] {
        let image = common::model(file)?;
        let r = client
            .post(format!("{base}/v1/models/digits/versions?version={version}&device_class=mcu"))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(image)
            .send()
            .await?;
        assert_eq!(r.status(), 201);
    }
    let mut state = String::new();
    for _ in 0..100 {
        let v: serde_json::Value = client
            .get(format!("{base}/v1/models/digits/versions/1.1.0"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        state = v["deltas"][0]["state"].as_str().unwrap_or_default().to_owned();
        if state != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    server.await?.map_err(|e| e.to_string())?;
    assert_eq!(state, "done", "woken by the upload, the worker computed the delta");
    Ok(())
}
