//! Who may connect to the broker, and as whom.
//!
//! A device logs in with username = client id = its device id and the password issued when
//! it was provisioned (`POST /v1/devices`): 32 random bytes, shown once, stored only as
//! their SHA-256 (a 256-bit random secret needs no slow hash, as API tokens do). Binding
//! the client id to the username keeps one device from taking over another's session
//! (a broker disconnects the older of two connections with one client id).
//!
//! On the embedded broker the backend's own client logs in as [`BACKEND_USER`], which no
//! device id can be (`:` is not allowed in one), with a secret generated at each start.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::blobs::hex;
use crate::db::Db;

/// The backend's username on the embedded broker.
pub const BACKEND_USER: &str = "mota:backend";

/// Why credentials could not be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness: {0}")]
pub struct RandomError(String);

/// A new random password: 32 bytes, lowercase hex.
pub fn new_password() -> Result<String, RandomError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| RandomError(e.to_string()))?;
    Ok(hex(&secret))
}

/// What is stored of a password: its SHA-256, lowercase hex.
pub fn hash(password: &str) -> String {
    hex(&Sha256::digest(password.as_bytes()))
}

/// The commands that give device `id` its login on Mosquitto's dynamic-security plugin,
/// as a document to publish on `$CONTROL/dynamic-security/v1` (deploy/mosquitto): for a
/// `new` device a role of its own (Mosquitto 2.0's plugin substitutes no `%u` in ACLs)
/// that lets it publish its device→backend topics and subscribe to exactly its
/// backend→device topics, and a client with that role whose client id must be `id`;
/// otherwise only the new password.
pub fn mosquitto_dynsec(id: &str, password: &str, new: bool) -> serde_json::Value {
    use mota_proto::topic::{Kind, PREFIX};
    if !new {
        return serde_json::json!({ "commands": [
            { "command": "setClientPassword", "username": id, "password": password },
        ] });
    }
    let role = format!("mota-device-{id}");
    let mut acls: Vec<serde_json::Value> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let acltype = if kind.from_device() { "publishClientSend" } else { "subscribeLiteral" };
            serde_json::json!({ "acltype": acltype, "topic": format!("{PREFIX}{id}/{}", kind.as_str()),
                "priority": 0, "allow": true })
        })
        .collect();
    // Denied by default already; said outright so no later grant opens the backend's groups.
    acls.push(serde_json::json!({ "acltype": "subscribePattern", "topic": "$share/#", "priority": 1, "allow": false }));
    serde_json::json!({ "commands": [
        { "command": "createRole", "rolename": role, "acls": acls },
        { "command": "createClient", "username": id, "password": password, "clientid": id,
          "roles": [{ "rolename": role }] },
    ] })
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The backend itself: everywhere.
    Backend,
    /// A provisioned device: only under `mota/v1/dev/{id}/`.
    Device(String),
}

/// Checks logins against the devices' stored credentials and the backend's secret.
#[derive(Clone)]
pub struct Authenticator {
    db: Db,
    backend_secret: Arc<str>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

impl Authenticator {
    /// An authenticator over `db`'s devices, with a new secret for the backend's client.
    pub fn new(db: Db) -> Result<Self, RandomError> {
        Ok(Self { db, backend_secret: new_password()?.into() })
    }

    /// The backend client's password (for [`BACKEND_USER`]).
    pub fn backend_secret(&self) -> &str {
        &self.backend_secret
    }

    /// Who logs in with these; `None` for anyone else (a database error refuses too,
    /// and is logged).
    pub async fn check(&self, client_id: &str, username: &str, password: &str) -> Option<Identity> {
        if username == BACKEND_USER {
            // Compared as digests: equal-length strings whose comparison time says nothing
            // about the secret.
            return (hash(password) == hash(&self.backend_secret)).then_some(Identity::Backend);
        }
        if client_id != username || mota_proto::topic::check_device_id(username).is_err() {
            return None;
        }
        let stored: Result<Option<Option<String>>, _> =
            sqlx::query_scalar("SELECT mqtt_password_hash FROM devices WHERE id = $1 AND provisioned_at IS NOT NULL")
                .bind(username)
                .fetch_optional(&self.db.pool)
                .await;
        match stored {
            Ok(Some(Some(stored))) if stored == hash(password) => Some(Identity::Device(username.to_owned())),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(device = username, "checking MQTT credentials: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_and_hashed() {
        let (a, b) = (new_password().unwrap(), new_password().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(mota_proto::topic::check_device_id(BACKEND_USER).is_err(), "no device can be the backend");
    }
}
