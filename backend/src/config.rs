//! What the server needs to start: flags, `MOTA_*` environment variables, and an optional
//! TOML file (`--config FILE` or `MOTA_CONFIG`), in that order of precedence, over the
//! built-in defaults.
//!
//! The file's keys are the flags' names with `_` for `-` (`data_dir = "/var/lib/mota"`).
//! They become the flags' defaults before parsing, so clap still does every check and
//! `--print-config` shows what is in effect; an unknown key is an error, not a silent
//! typo. A Kubernetes ConfigMap mounts such a file; Secrets arrive as variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

/// The server's configuration. Every field is a flag and an environment variable.
/// `Debug` prints what `--print-config` prints: secrets redacted.
#[derive(Clone, Args, Serialize)]
pub struct Config {
    /// A TOML file of defaults for the settings below (flags and variables win over it).
    #[arg(long, env = "MOTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the embedded defaults: the SQLite file, blobs, development keys.
    #[arg(long, env = "MOTA_DATA_DIR", default_value = "./mota-data")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    #[arg(long, env = "MOTA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` or `postgres://...`; default: SQLite in the data dir.
    #[arg(long, env = "MOTA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest request body accepted, in bytes (model uploads included).
    #[arg(long, env = "MOTA_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest model image (and validation set) accepted, in bytes: a device's slot.
    #[arg(long, env = "MOTA_MAX_MODEL_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_model_bytes: u64,
    /// A new version gets deltas from this many most recent earlier versions.
    #[arg(long, env = "MOTA_DELTA_BASES", default_value_t = 3)]
    pub delta_bases: u32,
    /// The release key (PKCS#8 PEM, from `mota keys release-new`); without it, a
    /// development key is generated into the data dir.
    #[arg(long, env = "MOTA_RELEASE_KEY", requires = "release_cert")]
    pub release_key: Option<PathBuf>,
    /// The release key's certificate (from `mota keys release-new`).
    #[arg(long, env = "MOTA_RELEASE_CERT", requires = "release_key")]
    pub release_cert: Option<PathBuf>,
    /// The root public key (`root.pub.pem`) the release certificate chains to: checked
    /// against the certificate at start, and against uploaded revocation lists.
    #[arg(long, env = "MOTA_ROOT_PUBLIC_KEY")]
    pub root_public_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "MOTA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// S3 bucket for blobs; when set, blobs are stored there instead of `DATA_DIR/blobs`
    /// (uploads are still spooled in `DATA_DIR/blobs-tmp`).
    #[arg(long, env = "MOTA_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible stores (MinIO, s3s, ...); default: AWS.
    #[arg(long, env = "MOTA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "MOTA_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style S3 addressing (`ENDPOINT/BUCKET/KEY`) instead of virtual-hosted
    /// (`BUCKET.ENDPOINT/KEY`); most S3-compatible stores need it.
    #[arg(long, env = "MOTA_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Prefix of every blob's S3 key (e.g. `mota/`); the rest is the hex SHA-256.
    #[arg(long, env = "MOTA_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// S3 access key id; without it, the AWS default chain: `AWS_*` environment, profile,
    /// web identity (IRSA), container or instance (IMDS) credentials.
    #[arg(long, env = "MOTA_S3_ACCESS_KEY_ID", requires = "s3_secret_access_key")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key, with `--s3-access-key-id`.
    #[arg(long, env = "MOTA_S3_SECRET_ACCESS_KEY", requires = "s3_access_key_id", hide_env_values = true)]
    #[serde(serialize_with = "redacted")]
    pub s3_secret_access_key: Option<String>,

    /// Run the HTTP API alone: no MQTT client and no embedded broker (devices cannot
    /// register or receive rollouts).
    #[arg(long, env = "MOTA_NO_MQTT")]
    pub no_mqtt: bool,
    /// External MQTT broker, `mqtt://HOST[:PORT]` (port 1883 by default) or, over TLS,
    /// `mqtts://HOST[:PORT]` (8883, with `--mqtt-ca-file`); without it, a broker is
    /// started in-process on `--mqtt-listen`.
    #[arg(long, env = "MOTA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// PEM file of the CA certificates that sign the broker's certificate (`mqtts://`);
    /// for a broker with a public certificate, the system bundle
    /// (`/etc/ssl/certs/ca-certificates.crt` on Debian).
    #[arg(long, env = "MOTA_MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<PathBuf>,
    /// PEM client certificate for brokers that authenticate clients by certificate.
    #[arg(long, env = "MOTA_MQTT_CLIENT_CERT", requires = "mqtt_client_key")]
    pub mqtt_client_cert: Option<PathBuf>,
    /// PEM private key of `--mqtt-client-cert`.
    #[arg(long, env = "MOTA_MQTT_CLIENT_KEY", requires = "mqtt_client_cert")]
    pub mqtt_client_key: Option<PathBuf>,
    /// Address the embedded broker listens on (when `--mqtt-url` is not set); devices
    /// connect here. On a loopback address it is open (no login: the single-machine
    /// demo); on any other it admits only provisioned devices, each under its own id.
    #[arg(long, env = "MOTA_MQTT_LISTEN", default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,
    /// MQTT username, for the external broker.
    #[arg(long, env = "MOTA_MQTT_USERNAME", requires = "mqtt_password")]
    pub mqtt_username: Option<String>,
    /// MQTT password, with `--mqtt-username`.
    #[arg(long, env = "MOTA_MQTT_PASSWORD", requires = "mqtt_username", hide_env_values = true)]
    #[serde(serialize_with = "redacted")]
    pub mqtt_password: Option<String>,
    /// MQTT client id of this replica: stable across restarts (its persistent session
    /// keeps the messages that arrive while it is away) and unique per replica (a
    /// StatefulSet's pod name, for instance).
    #[arg(long, env = "MOTA_MQTT_CLIENT_ID", default_value = "mota-backend")]
    pub mqtt_client_id: String,
    /// Prefix of the share groups the replicas of one deployment split device messages
    /// in (`$share/{group}-status/...`): the same on every replica, different for two
    /// deployments on one broker.
    #[arg(long, env = "MOTA_MQTT_SHARE_GROUP", default_value = mota_proto::topic::SHARE_GROUP)]
    pub mqtt_share_group: String,
    /// Register a device that says hello without having been provisioned (`POST
    /// /v1/devices`), with the class its hello declares: the single-machine default, so a
    /// demo or a simulated fleet needs no set-up. Production sets it to false (the chart
    /// does): then hellos of devices that were not provisioned are dropped, logged and
    /// counted (`mota_hellos_total{outcome="unknown"}`).
    #[arg(long, env = "MOTA_AUTO_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_register: bool,
    /// Memory for artifacts the chunk service keeps whole (the patches and validation
    /// sets a cohort downloads), bytes; artifacts over a quarter of it are read by range.
    #[arg(long, env = "MOTA_CHUNK_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub chunk_cache_bytes: u64,
    /// Chunk requests per second one device may make (0: no limit); more are answered
    /// `rate_limited` and the device asks again later.
    #[arg(long, env = "MOTA_CHUNK_RATE", default_value_t = 100.0)]
    pub chunk_rate: f64,
    /// Chunk requests one device may make at once.
    #[arg(long, env = "MOTA_CHUNK_BURST", default_value_t = 200.0)]
    pub chunk_burst: f64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// A secret in `--print-config`: whether it is set, not what it is.
fn redacted<S: serde::Serializer>(secret: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("(redacted)"),
        None => serializer.serialize_none(),
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("mota.db").display()),
        }
    }

    /// A configuration for tests and embedding: data in `data_dir`, any free port.
    pub fn embedded(data_dir: PathBuf) -> Self {
        Self {
            config: None,
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: None,
            max_body_bytes: 64 * 1024 * 1024,
            max_model_bytes: 16 * 1024 * 1024,
            delta_bases: 3,
            release_key: None,
            release_cert: None,
            root_public_key: None,
            log_format: LogFormat::Text,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_path_style: false,
            s3_prefix: String::new(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            // Tests opt in to MQTT (`no_mqtt = false` and a free `mqtt_listen`).
            no_mqtt: true,
            mqtt_url: None,
            mqtt_ca_file: None,
            mqtt_client_cert: None,
            mqtt_client_key: None,
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_username: None,
            mqtt_password: None,
            mqtt_client_id: "mota-backend".into(),
            mqtt_share_group: mota_proto::topic::SHARE_GROUP.into(),
            auto_register: true,
            chunk_cache_bytes: 64 * 1024 * 1024,
            chunk_rate: 100.0,
            chunk_burst: 200.0,
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration file {path}: {message}")]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// `cmd` with the defaults of its flags taken from the configuration file that `args`
/// (`--config FILE`, `--config=FILE`) or `MOTA_CONFIG` names, if any.
pub fn with_file_defaults(mut cmd: clap::Command, args: &[String]) -> Result<clap::Command, ConfigFileError> {
    let named = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--config") {
        Some("") => args.get(i + 1).cloned(),
        Some(rest) => rest.strip_prefix('=').map(str::to_owned),
        None => None,
    });
    let Some(path) = named.or_else(|| std::env::var("MOTA_CONFIG").ok()).map(PathBuf::from) else {
        return Ok(cmd);
    };
    let fail = |message: String| ConfigFileError { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| fail(e.message().to_owned()))?;
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(fail(format!("{key}: expected a string, number or boolean, not {}", other.type_str())));
            }
        };
        let known =
            key != "config" && cmd.get_arguments().any(|a| a.get_id() == key.as_str() && a.get_long().is_some());
        if !known {
            return Err(fail(format!("unknown setting {key:?}")));
        }
        cmd = cmd.mut_arg(key, |a| a.default_value(value));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let mut config = Config::embedded(PathBuf::from("/d"));
        config.s3_access_key_id = Some("AKIDVISIBLE".into());
        config.s3_secret_access_key = Some("very-secret".into());
        config.mqtt_username = Some("backend".into());
        config.mqtt_password = Some("mqtt-secret".into());
        let shown = format!("{config:?}");
        assert!(shown.contains("AKIDVISIBLE") && shown.contains("(redacted)") && !shown.contains("very-secret"));
        assert!(shown.contains("\"backend\"") && !shown.contains("mqtt-secret"));
    }
}
