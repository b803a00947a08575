//! The connection to a backend and the HTTP calls every remote command makes.
//!
//! Where to connect is settled once, in the order operators expect from kubectl or
//! mender-cli: flags, then `MOTA_SERVER`/`MOTA_TOKEN`, then the config file that
//! `mota login` writes. Every refusal keeps the server's code and message (they are
//! stable and documented) and adds what to do next; `exit` maps it to an exit code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// The backend when nothing says otherwise: `mota-backend` on its embedded defaults.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the backend is and who we are to it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Connection {
    /// Backend URL [default: the config file's, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "MOTA_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API token [default: the config file's]. Create one with
    /// `mota-backend token create --role operator` on the server, or `mota token create`.
    #[arg(long, global = true, env = "MOTA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Config file holding `server` and `token` [default: ~/.config/mota/config.toml].
    #[arg(long, global = true, env = "MOTA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file: what `mota login` saved.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Backend URL.
    pub server: Option<String>,
    /// API token.
    pub token: Option<String>,
}

impl Connection {
    /// The config file in effect (it may not exist).
    pub fn config_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.config {
            return Some(path.clone());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
        Some(base.join("mota").join("config.toml"))
    }

    /// Reads the config file; a missing file is an empty one.
    pub fn read_config(&self) -> Result<ConfigFile> {
        let Some(path) = self.config_path() else { return Ok(ConfigFile::default()) };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("reading the config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.config.is_none() => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading the config file {}", path.display())),
        }
    }

    /// A client for the backend this connection names.
    pub fn client(&self) -> Result<Client> {
        self.client_from(self.read_config()?)
    }

    /// A client for `mota login`, which may be about to create the config file: a
    /// missing file is an empty one even when named with --config / MOTA_CONFIG.
    pub fn client_for_login(&self) -> Result<Client> {
        let exists = self.config_path().is_some_and(|path| path.exists());
        self.client_from(if exists { self.read_config()? } else { ConfigFile::default() })
    }

    fn client_from(&self, file: ConfigFile) -> Result<Client> {
        let server = self.server.clone().or(file.server).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = self.token.clone().or(file.token).filter(|t| !t.is_empty());
        Client::new(&server, token)
    }
}

/// Why the backend did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered.
    #[error(
        "cannot reach the backend at {url}: {detail}\n  hint: start it (`mota-backend`, or `mota demo --keep`) or point --server / MOTA_SERVER at it"
    )]
    Unreachable {
        /// Where we tried.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The backend answered with an error.
    #[error("{message} ({code}, HTTP {status}){}", hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's stable error code.
        code: String,
        /// The API's message.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// The answer was not what the API documents (a proxy in the way, another server).
    #[error("unexpected answer from {url}: {detail}\n  hint: is --server a mota backend?")]
    Protocol {
        /// The request.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn hint(status: StatusCode, code: &str) -> Option<String> {
    Some(
        match (status, code) {
            (StatusCode::UNAUTHORIZED, "token_expired") => {
                "ask an admin for a new token (`mota token create NAME --expires-in 30d`) and save it with `mota login`"
            }
            (StatusCode::UNAUTHORIZED, _) => {
                "pass a valid token with --token or MOTA_TOKEN, or save one with `mota login`; \
                 create one on the server with `mota-backend token create --role operator`"
            }
            (StatusCode::FORBIDDEN, _) => "this token's role may not do that: use an operator token (admin for tokens)",
            (StatusCode::NOT_FOUND, _) => "check the name or id: the matching `list` command shows what exists",
            (StatusCode::CONFLICT, "rollout_state") => "`mota rollout show ID` shows its state and what it allows",
            (StatusCode::CONFLICT, _) => "it exists already or conflicts with what exists: list it to see",
            (StatusCode::PAYLOAD_TOO_LARGE, _) => "the backend's --max-model-bytes / --max-body-bytes set the limit",
            (s, _) if s.is_server_error() => "the backend failed: its log says why",
            _ => return None,
        }
        .to_owned(),
    )
}

/// An authenticated HTTP client for one backend.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `server` (a base URL) presenting `token`.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server must be an http:// or https:// URL, not {server:?}");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("mota/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base, token })
    }

    /// The backend's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token presented, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` (from the API root, `/v1/...`), authenticated.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; the JSON answer, or why not (`null` for an empty answer).
    pub async fn send(&self, request: RequestBuilder) -> Result<Value, ApiError> {
        let url = self.base.clone();
        let response =
            request.send().await.map_err(|e| ApiError::Unreachable { url: url.clone(), detail: causes(&e) })?;
        let status = response.status();
        let bytes =
            response.bytes().await.map_err(|e| ApiError::Unreachable { url: url.clone(), detail: causes(&e) })?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Protocol {
                url,
                detail: format!("HTTP {status} with a body that is not JSON: {e}"),
            });
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, message) = match &body["error"] {
            Value::Object(detail) => (
                detail.get("code").and_then(Value::as_str).unwrap_or("error").to_owned(),
                detail.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
            ),
            _ => (
                "http".to_owned(),
                status.canonical_reason().unwrap_or("error").to_lowercase() + &format!(" from {url}"),
            ),
        };
        Err(ApiError::Refused { status: status.as_u16(), hint: hint(status, &code), code, message })
    }

    /// `GET path?query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.send(self.request(Method::GET, path).query(query)).await
    }

    /// `method path` with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.send(self.request(method, path).json(body)).await
    }

    /// Every item of a paginated list, following `next` cursors (at most `max` items).
    pub async fn all(&self, path: &str, query: &[(&str, String)], max: usize) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "500".to_owned()));
            if let Some(cursor) = &after {
                q.push(("after", cursor.clone()));
            }
            let page = self.get(path, &q).await?;
            let Some(batch) = page["items"].as_array() else {
                return Err(ApiError::Protocol {
                    url: format!("{}{path}", self.base),
                    detail: "no `items` list".into(),
                });
            };
            items.extend(batch.iter().cloned());
            after = match &page["next"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if after.is_none() || items.len() >= max {
                items.truncate(max);
                return Ok(items);
            }
        }
    }
}

/// An error and its causes on one line (reqwest's own message hides the interesting part).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes one path segment (names are restricted by the API, but ids typed by
/// hand may hold anything).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_token_is_told_to_get_a_new_one_not_to_pass_one() {
        let expired = hint(StatusCode::UNAUTHORIZED, "token_expired").unwrap_or_default();
        assert!(expired.contains("new token") && expired.contains("--expires-in"), "{expired}");
        let unknown = hint(StatusCode::UNAUTHORIZED, "unauthorized").unwrap_or_default();
        assert!(unknown.contains("mota-backend token create"), "{unknown}");
    }
}
