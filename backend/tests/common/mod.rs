//! Test helpers shared by the backend's integration tests: a server state on SQLite and a
//! local blob directory in a temporary data dir, or on the services CI starts beside
//! `cargo test` when they are named: a fresh PostgreSQL database when `MOTA_TEST_POSTGRES`
//! holds a server URL, a fresh bucket when `MOTA_TEST_S3_ENDPOINT` (with
//! `MOTA_TEST_S3_ACCESS_KEY`, `MOTA_TEST_S3_SECRET_KEY`) names an S3 server (`.ci/s3.sh`);
//! tokens of each role; in-memory requests through the router; the fixture models and
//! validation sets.
#![allow(dead_code)] // Each test binary uses its own part of the helpers.

pub mod cluster;
pub mod control;
pub mod load;
pub mod rollouts;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mota_backend::Config;
use mota_backend::server::{AppState, open, router};
use mota_backend::tokens::{self, Role};
use std::future::Future;

use tower::ServiceExt;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), BoxError>;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/");

/// A fixture model's bytes.
pub fn model(name: &str) -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(format!("{FIXTURES}{name}.tflite"))?)
}

/// A validation set of the first `records` digits inputs and labels (fits the digits models).
pub fn digits_set(records: usize) -> Result<Vec<u8>, BoxError> {
    let read = |suffix: &str| -> Result<mota_runtime::npy::Npy, BoxError> {
        let bytes = std::fs::read(format!("{FIXTURES}digits_cnn_v1.{suffix}.npy"))?;
        mota_runtime::npy::Npy::parse(&bytes).map_err(|e| format!("{e:?}").into())
    };
    let (x, y) = (read("inputs")?, read("labels")?);
    let per = x.data.len() / x.rows();
    let records = records.min(x.rows());
    let labels: Vec<u16> = y.data.chunks_exact(4).take(records).map(|c| c[0] as u16).collect();
    let set = mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &x.shape[1..],
        &x.data[..per * records],
        Some((&labels, 10)),
        None,
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(set)
}

/// A configuration on a fresh database and blob store: SQLite and blobs in `data_dir`, or
/// a new database on the PostgreSQL server `MOTA_TEST_POSTGRES` names, and a new bucket
/// on the S3 server `MOTA_TEST_S3_ENDPOINT` names.
pub async fn config(data_dir: std::path::PathBuf) -> Result<Config, BoxError> {
    let mut config = Config::embedded(data_dir);
    if let Ok(url) = std::env::var("MOTA_TEST_POSTGRES") {
        config.database_url = Some(fresh_postgres(&url).await?);
    }
    if let Some(s3) = s3_from_env() {
        let bucket = s3.create_bucket("api").await?;
        s3.configure(&mut config, &bucket);
    }
    Ok(config)
}

async fn fresh_postgres(url: &str) -> Result<String, BoxError> {
    use sqlx::Connection;
    let mut name = [0u8; 8];
    getrandom::fill(&mut name).map_err(|e| e.to_string())?;
    let name = format!("mota_test_{}", mota_backend::blobs::hex(&name));
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let (base, _) = url.rsplit_once('/').ok_or("MOTA_TEST_POSTGRES has no database part")?;
    Ok(format!("{base}/{name}"))
}

/// A server's state and router, in memory, with a token per role.
pub struct Api {
    pub state: AppState,
    pub router: Router,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub dir: tempfile::TempDir,
    /// The test bucket, when blobs are on S3.
    pub bucket: Option<String>,
}

/// A response: status, headers and body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The error code of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl Api {
    /// A fresh server on `config(temp dir)`, adjusted by `tune`.
    pub async fn with(tune: impl FnOnce(&mut Config)) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let mut config = config(dir.path().join("data")).await?;
        tune(&mut config);
        std::fs::create_dir_all(&config.data_dir)?;
        let state = open(&config).await?;
        let router = router(state.clone(), config.max_body_bytes);
        let token = async |role| tokens::create(&state.db, &format!("{role:?}"), role, 0).await;
        let (admin, operator, viewer) =
            (token(Role::Admin).await?, token(Role::Operator).await?, token(Role::Viewer).await?);
        let bucket = config.s3_bucket.clone();
        Ok(Self { state, router, admin, operator, viewer, dir, bucket })
    }

    /// A fresh server on embedded defaults.
    pub async fn new() -> Result<Self, BoxError> {
        Self::with(|_| {}).await
    }

    /// Sends a request through the router.
    pub async fn send(&self, request: Request<Body>) -> Result<Reply, BoxError> {
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?.to_vec();
        Ok(Reply { status, headers, body })
    }

    /// `GET uri` with `token`.
    pub async fn get(&self, uri: &str, token: &str) -> Result<Reply, BoxError> {
        self.send(Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty())?).await
    }

    /// `method uri` with `token` and a JSON body.
    pub async fn json(&self, method: &str, uri: &str, token: &str, body: serde_json::Value) -> Result<Reply, BoxError> {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))?,
        )
        .await
    }

    /// `POST uri` with `token` and raw bytes.
    pub async fn post_bytes(&self, uri: &str, token: &str, bytes: Vec<u8>) -> Result<Reply, BoxError> {
        self.send(
            Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(bytes))?,
        )
        .await
    }

    /// Uploads `image` as `model` `version` for class `mcu`.
    pub async fn upload(&self, model: &str, version: &str, image: Vec<u8>, extra: &str) -> Result<Reply, BoxError> {
        let uri = format!("/v1/models/{model}/versions?version={version}&device_class=mcu{extra}");
        self.post_bytes(&uri, &self.operator, image).await
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> Result<i64, BoxError> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.state.db.pool).await?)
    }

    /// Blobs stored: objects in the test bucket on S3, else files in the local store
    /// (uploads in progress included).
    pub async fn blob_count(&self) -> Result<usize, BoxError> {
        if let (Some(s3), Some(bucket)) = (s3_from_env(), &self.bucket) {
            let listed = s3.client().list_objects_v2().bucket(bucket).send().await?;
            return Ok(listed.contents().len());
        }
        Ok(self.blob_files())
    }

    /// Files in the local blob store (uploads in progress included).
    pub fn blob_files(&self) -> usize {
        fn walk(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries.filter_map(Result::ok).map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
            })
        }
        walk(&self.dir.path().join("data/blobs"))
    }

    /// What must not change when a request is refused.
    pub async fn footprint(&self) -> Result<[i64; 6], BoxError> {
        Ok([
            self.count("models").await?,
            self.count("model_versions").await?,
            self.count("artifacts").await?,
            self.count("validation_sets").await?,
            self.count("delta_jobs").await?,
            self.blob_count().await? as i64,
        ])
    }
}

/// An S3-compatible server for tests (CI starts s3s-fs with `.ci/s3.sh`).
pub struct TestS3 {
    /// Its URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id it accepts.
    pub access_key: String,
    /// Secret access key it accepts.
    pub secret_key: String,
}

/// The S3 server named by `MOTA_TEST_S3_ENDPOINT`, `MOTA_TEST_S3_ACCESS_KEY` and
/// `MOTA_TEST_S3_SECRET_KEY`, if the endpoint is set.
pub fn s3_from_env() -> Option<TestS3> {
    let endpoint = std::env::var("MOTA_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty())?;
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    Some(TestS3 { endpoint, access_key: var("MOTA_TEST_S3_ACCESS_KEY"), secret_key: var("MOTA_TEST_S3_SECRET_KEY") })
}

impl TestS3 {
    /// Points `config`'s blob store at `bucket` on this server (path-style, us-east-1,
    /// static credentials).
    pub fn configure(&self, config: &mut Config, bucket: &str) {
        config.s3_bucket = Some(bucket.to_owned());
        config.s3_endpoint = Some(self.endpoint.clone());
        config.s3_region = "us-east-1".into();
        config.s3_path_style = true;
        config.s3_access_key_id = Some(self.access_key.clone());
        config.s3_secret_access_key = Some(self.secret_key.clone());
    }

    /// Creates a bucket no other test uses and returns its name (`mota-{tag}-…`; `tag`
    /// in lowercase letters, digits and dashes).
    pub async fn create_bucket(&self, tag: &str) -> Result<String, BoxError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let bucket = format!("mota-{tag}-{}-{nanos}-{n}", std::process::id());
        self.client().create_bucket().bucket(&bucket).send().await?;
        Ok(bucket)
    }

    /// A client of this server, to look behind the blob store.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(&self.access_key, &self.secret_key, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// Points `config` at a broker for MQTT tests: the embedded one on a free port, or the one
/// at `MOTA_TEST_BROKER` (HOST:PORT); a client id unique to the test binary (`tag`).
/// Returns the broker's host and port.
pub fn broker(config: &mut Config, tag: &str) -> Result<(String, u16), BoxError> {
    config.no_mqtt = false;
    config.mqtt_client_id = format!("mota-backend-{tag}-{}", std::process::id());
    // Tests share an external broker: each its own share groups, or they take each
    // other's messages.
    config.mqtt_share_group = format!("mota-{tag}-{}", std::process::id());
    if let Ok(addr) = std::env::var("MOTA_TEST_BROKER") {
        let (host, port) = addr.rsplit_once(':').ok_or("MOTA_TEST_BROKER must be HOST:PORT")?;
        config.mqtt_url = Some(format!("mqtt://{addr}"));
        return Ok((host.to_owned(), port.parse()?));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    config.mqtt_listen = format!("127.0.0.1:{port}").parse()?;
    Ok(("127.0.0.1".to_owned(), port))
}

/// On a shared broker (`MOTA_TEST_BROKER`), tests of one binary take turns: every
/// backend hears every device there (its own share groups get a copy of each message)
/// and answers chunk requests of devices it never offered anything with refusals, which
/// would fail the other test's downloads. Hold the guard for the whole test.
pub async fn broker_turn() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    match std::env::var_os("MOTA_TEST_BROKER") {
        Some(_) => Some(TURN.lock().await),
        None => None,
    }
}

/// On a shared broker (`MOTA_TEST_BROKER`), removes the backend's persistent session: an
/// offline session in the share groups would still get its turn of other tests' messages.
pub async fn clear_session(config: &Config, host: &str, port: u16) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
    if config.mqtt_url.is_none() {
        return;
    }
    let mut options = MqttOptions::new(config.mqtt_client_id.clone(), host, port);
    options.set_clean_session(true);
    let (cleaner, mut events) = AsyncClient::new(options, 8);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                let _ = cleaner.try_disconnect();
            }
            if let Event::Outgoing(Outgoing::Disconnect) = event {
                break;
            }
        }
    })
    .await;
}

/// Polls `GET /v1/devices/{id}` until `ok` holds (`secs` at most); the last view.
pub async fn wait_for_device(
    api: &Api,
    id: &str,
    secs: u64,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, BoxError> {
    let mut last = serde_json::Value::Null;
    for _ in 0..secs * 20 {
        let reply = api.get(&format!("/v1/devices/{id}"), &api.viewer).await?;
        last = reply.json();
        if reply.status == StatusCode::OK && ok(&last) {
            return Ok(last);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(format!("device {id} never got there; last seen as {last}").into())
}

/// The public key of the development root the backend generated in `data_dir`: what
/// devices of a development fleet trust.
pub fn dev_root(data_dir: &std::path::Path) -> Result<[u8; 32], BoxError> {
    let pem = std::fs::read_to_string(data_dir.join("keys/dev-root.pub.pem"))?;
    match mota_proto::keys::KeyFile::from_pem(&pem) {
        Ok(mota_proto::keys::KeyFile::Public(root)) => Ok(root.to_bytes()),
        _ => Err("dev-root.pub.pem is not a public key".into()),
    }
}

/// The backend's MQTT side and rollout engine on an [`Api`]'s state, as `run` starts them.
pub struct Backend {
    pub mqtt: mota_backend::mqtt::Mqtt,
    pub engine: tokio::task::JoinHandle<()>,
    config: Config,
}

impl Backend {
    /// Starts both with `config` (from [`broker`]).
    pub async fn start(config: &Config, api: &Api) -> Result<Self, BoxError> {
        Self::start_on(config, &api.state).await
    }

    /// Starts both on `state` (a second replica's, for instance).
    pub async fn start_on(config: &Config, state: &AppState) -> Result<Self, BoxError> {
        let mqtt = mota_backend::mqtt::start(config, state).await?;
        let engine = mota_backend::rollout::engine::Engine::new(state, &mqtt);
        Ok(Self { mqtt, engine: tokio::spawn(engine.run()), config: config.clone() })
    }

    /// Stops the engine, disconnects, and on a shared broker removes the session.
    pub async fn stop(self) {
        self.engine.abort();
        self.mqtt.stop().await;
        let url = self.config.mqtt_url.as_deref().and_then(|u| u.strip_prefix("mqtt://"));
        if let Some((host, Ok(port))) = url.and_then(|u| u.rsplit_once(':')).map(|(h, p)| (h, p.parse())) {
            clear_session(&self.config, host, port).await;
        }
    }
}

/// A simulated device (mota-sim: the real agent on simulated flash, in memory) `id` on
/// the broker at `host:port`, running `factory` (security counter 1) and trusting the
/// development root in `data_dir`.
pub fn device(
    data_dir: &std::path::Path,
    (host, port): (&str, u16),
    id: &str,
    factory: &[u8],
    faults: mota_sim::Faults,
) -> Result<mota_sim::DeviceOptions, BoxError> {
    Ok(mota_sim::DeviceOptions {
        id: id.to_owned(),
        host: host.to_owned(),
        port,
        password: None,
        class: "mcu".into(),
        roots: vec![dev_root(data_dir)?],
        factory: std::sync::Arc::from(factory),
        factory_counter: 1,
        flash_file: None,
        faults,
        seed: 11,
        keep_alive: mota_sim::DeviceOptions::KEEP_ALIVE,
    })
}

/// Runs one device on the current `LocalSet`; its status cell and its task.
pub fn run_device(
    options: mota_sim::DeviceOptions,
) -> (std::rc::Rc<std::cell::RefCell<mota_sim::DeviceStatus>>, tokio::task::JoinHandle<()>) {
    let status = std::rc::Rc::new(std::cell::RefCell::new(mota_sim::DeviceStatus::default()));
    let cell = std::rc::Rc::clone(&status);
    let task = tokio::task::spawn_local(async move {
        if let Err(e) = mota_sim::run_device(options, cell).await {
            eprintln!("device stopped: {e}");
        }
    });
    (status, task)
}

/// A fleet of `count` such devices `{prefix}00000…`.
pub async fn fleet(
    data_dir: &std::path::Path,
    address: (&str, u16),
    prefix: &str,
    count: usize,
    factory: &[u8],
    faults: mota_sim::Faults,
) -> Result<Vec<(String, std::rc::Rc<std::cell::RefCell<mota_sim::DeviceStatus>>)>, BoxError> {
    let options = mota_sim::FleetOptions {
        count,
        prefix: prefix.to_owned(),
        data_dir: None,
        stagger: std::time::Duration::from_millis(5),
        device: device(data_dir, address, "", factory, faults)?,
    };
    Ok(mota_sim::run_fleet(options).await)
}

/// Polls `check` every 100 ms until it returns `Some` (`secs` at most); `what` names
/// what was awaited in the error, with the last value `describe` gives.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, BoxError>>,
{
    for _ in 0..secs * 10 {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!("timed out after {secs} s waiting for {what}").into())
}
