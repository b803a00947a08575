//! MQTT topic names: `mota/v1/dev/{device}/{kind}`.
//!
//! The device id is one topic level, so it is an identifier (`[A-Za-z0-9._-]`, ≤ 64
//! bytes) and can never smuggle in `/`, `+`, `#` or `$`. A device only ever publishes and
//! subscribes under its own id; the broker's ACL enforces that (`%c`/`%u` patterns).
//! Backend replicas consume device→backend topics through shared subscriptions
//! ([`Kind::shared_filter`]) so each message reaches exactly one replica.

use core::fmt;

use crate::limits::{MAX_DEVICE_ID_LEN, check_ident};

/// Every topic starts with this.
pub const PREFIX: &str = "mota/v1/dev/";
/// Prefix of the backend's share groups: `mota-<kind>`, one per device→backend kind.
pub const SHARE_GROUP: &str = "mota";
/// Longest topic: prefix, device id, `/`, longest kind.
pub const MAX_TOPIC_LEN: usize = PREFIX.len() + MAX_DEVICE_ID_LEN + 1 + 6;

/// The seven topics of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// device → backend: identity and capabilities; last will.
    Hello,
    /// backend → device: the signed envelope, retained.
    Offer,
    /// device → backend: chunk request.
    Get,
    /// backend → device: chunk.
    Chunk,
    /// device → backend: progress and outcome.
    Status,
    /// backend → device: a signed rollback or cancel, retained.
    Cmd,
    /// backend → device: the root-signed revocation list, retained.
    Trust,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 7] = [Kind::Hello, Kind::Offer, Kind::Get, Kind::Chunk, Kind::Status, Kind::Cmd, Kind::Trust];

    /// The last topic level.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Offer => "offer",
            Kind::Get => "get",
            Kind::Chunk => "chunk",
            Kind::Status => "status",
            Kind::Cmd => "cmd",
            Kind::Trust => "trust",
        }
    }

    /// Whether devices publish it (and the backend subscribes).
    pub const fn from_device(self) -> bool {
        matches!(self, Kind::Hello | Kind::Get | Kind::Status)
    }

    /// The backend's shared-subscription filter for a device→backend kind, e.g.
    /// `$share/mota-status/mota/v1/dev/+/status`; `None` for backend→device kinds. One
    /// share group per kind (`mota-<kind>`): rumqttd 0.20 keys share groups by name alone
    /// with one read cursor per group, so filters sharing a group skip each other's
    /// messages there (status reports were lost); other brokers accept either.
    pub const fn shared_filter(self) -> Option<&'static str> {
        match self {
            Kind::Hello => Some("$share/mota-hello/mota/v1/dev/+/hello"),
            Kind::Get => Some("$share/mota-get/mota/v1/dev/+/get"),
            Kind::Status => Some("$share/mota-status/mota/v1/dev/+/status"),
            Kind::Offer | Kind::Chunk | Kind::Cmd | Kind::Trust => None,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A topic of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic<'a> {
    device: &'a str,
    kind: Kind,
}

/// Why a topic could not be built or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Not under [`PREFIX`], or not exactly `{device}/{kind}` after it.
    NotMota,
    /// The device id is empty, too long or has a forbidden character.
    InvalidDeviceId,
    /// The last level is not a known kind.
    UnknownKind,
    /// The output buffer is shorter than the topic.
    BufferTooSmall,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotMota => "not a mota/v1 device topic",
            Self::InvalidDeviceId => "invalid device id (1-64 bytes of A-Z a-z 0-9 . _ -)",
            Self::UnknownKind => "unknown topic kind",
            Self::BufferTooSmall => "buffer too small for topic",
        })
    }
}

impl core::error::Error for TopicError {}

impl<'a> Topic<'a> {
    /// The topic of `kind` for `device`.
    pub fn new(device: &'a str, kind: Kind) -> Result<Self, TopicError> {
        check_device_id(device)?;
        Ok(Self { device, kind })
    }

    /// Parses a topic name as received from the broker.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotMota)?;
        let (device, kind) = rest.rsplit_once('/').ok_or(TopicError::NotMota)?;
        check_device_id(device)?;
        let kind = Kind::parse(kind).ok_or(TopicError::UnknownKind)?;
        Ok(Self { device, kind })
    }

    /// The device id.
    pub fn device(&self) -> &'a str {
        self.device
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Writes the topic name into `buf` (for `no_std` callers; host code can use
    /// `to_string()`).
    pub fn write<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, TopicError> {
        let parts = [PREFIX, self.device, "/", self.kind.as_str()];
        let mut len = 0;
        for part in parts {
            let end = len + part.len();
            buf.get_mut(len..end).ok_or(TopicError::BufferTooSmall)?.copy_from_slice(part.as_bytes());
            len = end;
        }
        // Every part is ASCII (the device id was checked), so the bytes are UTF-8.
        core::str::from_utf8(&buf[..len]).map_err(|_| TopicError::InvalidDeviceId)
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.device, self.kind.as_str())
    }
}

/// Checks that a device id is usable as a topic level.
pub fn check_device_id(device: &str) -> Result<(), TopicError> {
    check_ident("device", device, MAX_DEVICE_ID_LEN).map_err(|_| TopicError::InvalidDeviceId)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result = core::result::Result<(), TopicError>;

    #[test]
    fn build_and_parse_every_kind() -> Result {
        for kind in Kind::ALL {
            let topic = Topic::new("dev-42", kind)?;
            let mut buf = [0u8; MAX_TOPIC_LEN];
            let name = topic.write(&mut buf)?;
            assert_eq!(name, format!("mota/v1/dev/dev-42/{}", kind.as_str()));
            assert_eq!(topic.to_string(), name);
            assert_eq!(Topic::parse(name), Ok(topic));
            assert_eq!(kind.shared_filter().is_some(), kind.from_device());
            if let Some(filter) = kind.shared_filter() {
                assert_eq!(filter, format!("$share/{SHARE_GROUP}-{k}/{PREFIX}+/{k}", k = kind.as_str()));
            }
        }
        Ok(())
    }

    #[test]
    fn longest_topic_fits_the_bound() -> Result {
        let id = "d".repeat(MAX_DEVICE_ID_LEN);
        let mut buf = [0u8; MAX_TOPIC_LEN];
        for kind in Kind::ALL {
            assert!(Topic::new(&id, kind)?.write(&mut buf).is_ok());
        }
        let mut short = [0u8; 18];
        assert_eq!(Topic::new("a", Kind::Hello)?.write(&mut short), Err(TopicError::BufferTooSmall));
        Ok(())
    }

    #[test]
    fn refuses_foreign_and_hostile_topics() {
        assert_eq!(Topic::parse("other/v1/dev/a/hello"), Err(TopicError::NotMota));
        assert_eq!(Topic::parse("mota/v1/dev/a"), Err(TopicError::NotMota));
        assert_eq!(Topic::parse("mota/v1/dev/a/b/hello"), Err(TopicError::InvalidDeviceId));
        assert_eq!(Topic::parse("mota/v1/dev/+/hello"), Err(TopicError::InvalidDeviceId));
        assert_eq!(Topic::parse("mota/v1/dev/#/hello"), Err(TopicError::InvalidDeviceId));
        assert_eq!(Topic::parse("mota/v1/dev//hello"), Err(TopicError::InvalidDeviceId));
        assert_eq!(Topic::parse("mota/v1/dev/a/reboot"), Err(TopicError::UnknownKind));
        assert_eq!(Topic::new("$SYS", Kind::Hello), Err(TopicError::InvalidDeviceId));
        let long = "d".repeat(MAX_DEVICE_ID_LEN + 1);
        assert_eq!(Topic::new(&long, Kind::Hello), Err(TopicError::InvalidDeviceId));
    }
}
