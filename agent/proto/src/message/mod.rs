//! Payloads of the MQTT topics (see [`crate::topic`]).
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `hello` | device → backend | [`Hello`] (also the last will, with `online = false`) |
//! | `offer` | backend → device | [`crate::Envelope`], retained; an empty payload clears it |
//! | `get` | device → backend | [`Get`] |
//! | `chunk` | backend → device | [`Chunk`] |
//! | `status` | device → backend | [`Status`], idempotent by (rollout id, seq) |
//! | `cmd` | backend → device | [`crate::Envelope`] of a [`crate::CommandBody`], retained |
//! | `trust` | backend → device | [`crate::SignedRevocation`], retained |
//!
//! [`Payload::parse`] decodes any of them given the topic's kind.
//!
//! Messages are CBOR maps with integer keys. Unlike the signed structures they are
//! decoded leniently: unknown keys are skipped, so either side can add optional fields
//! without breaking the other. Encoding is always canonical.

mod chunk;
mod code;
mod get;
mod hello;
mod payload;
mod status;

pub use chunk::{Chunk, Refusal};
pub use code::ErrorCode;
pub use get::Get;
pub use hello::{DeviceInfo, Hello, RunningModel};
pub use payload::Payload;
pub use status::{Event, Status};
