//! The HTTP server: state, middleware, and the life cycle (`run` returns once `shutdown`
//! resolves and in-flight requests are done; the delta worker and the MQTT client stop
//! with it).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::blobs::{BlobError, BlobStore, Blobs};
use crate::config::Config;
use crate::db::{Db, DbError};
use crate::metrics::{self, Metrics};
use crate::registry::{Registry, deltas};
use crate::signing::Signer;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created.
    #[error("data directory {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    /// The database is unusable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No release key.
    #[error(transparent)]
    Signing(#[from] crate::signing::SigningError),
    /// The blob store is unusable.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The MQTT side could not start.
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The release key.
    pub signer: Arc<Signer>,
    /// Models, patches and validation sets.
    pub blobs: Blobs,
    /// The registry over both.
    pub registry: Registry,
    /// Request and registry metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the rollout engine (a report moved an attempt, an operator acted).
    pub engine_wake: Arc<Notify>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// Opens the database (migrating it), the blob store and the release key; serves the API
/// on `listener` and runs the delta worker and, unless `--no-mqtt`, the MQTT client (and
/// the embedded broker, without `--mqtt-url`) until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::DataDir(config.data_dir.clone(), e))?;
    let state = open(&config).await?;
    let (mqtt, engine) = if config.no_mqtt {
        (None, None)
    } else {
        let mqtt = crate::mqtt::start(&config, &state).await?;
        let engine = crate::rollout::engine::Engine::new(&state, &mqtt);
        (Some(mqtt), Some(tokio::spawn(engine.run())))
    };
    let worker = tokio::spawn(deltas::worker(state.registry.clone()));
    let app = router(state, config.max_body_bytes);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve);
    worker.abort();
    if let Some(engine) = engine {
        engine.abort();
    }
    if let Some(mqtt) = mqtt {
        mqtt.stop().await;
    }
    served
}

/// Everything a router needs, opened from `config`.
pub async fn open(config: &Config) -> Result<AppState, ServerError> {
    let db = Db::connect(&config.database_url()).await?;
    db.migrate().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signer = crate::signing::load(
        crate::signing::KeyFiles {
            key: config.release_key.as_deref(),
            cert: config.release_cert.as_deref(),
            root: config.root_public_key.as_deref(),
        },
        &config.data_dir,
        &db,
        now,
    )
    .await?;
    let blobs = Blobs::open(config).await?;
    blobs.ping().await?;
    if let Blobs::Local(local) = &blobs {
        let removed = local.clean_temporaries().await?;
        if removed > 0 {
            tracing::info!(removed, "removed the temporary files of interrupted uploads");
        }
    }
    let registry = Registry {
        db: db.clone(),
        blobs: blobs.clone(),
        max_model_bytes: config.max_model_bytes,
        delta_bases: config.delta_bases,
        wake: Arc::new(Notify::new()),
    };
    Ok(AppState {
        db,
        signer: Arc::new(signer),
        blobs,
        registry,
        metrics: Arc::new(Metrics::default()),
        engine_wake: Arc::new(Notify::new()),
    })
}

/// The routes and middleware: the API, the metrics and the dashboard's files (public;
/// the data they show comes from the API, with the caller's token).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let metrics = state.metrics.clone();
    crate::api::routes()
        .route("/metrics", get(metrics::serve))
        .merge(crate::dashboard::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
