//! One entry point from (topic kind, payload bytes) to a typed message, so the backend's
//! and the agent's receive loops are a single `match`.

use super::{Chunk, Get, Hello, Status};
use crate::certificate::RootSigned;
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::topic::Kind;
use crate::wire::Wire;

/// A decoded payload of any mota topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `hello`.
    Hello(Hello<'a>),
    /// `offer`, decoded but not verified: a device passes the raw bytes to
    /// [`crate::verify()`] instead.
    Offer(Envelope<'a>),
    /// `offer` with an empty payload: the retained offer was cleared.
    OfferCleared,
    /// `get`.
    Get(Get),
    /// `chunk`.
    Chunk(Chunk<'a>),
    /// `status`.
    Status(Status<'a>),
    /// `cmd`: an envelope whose body is a command, decoded but not verified (a device
    /// passes the raw bytes to [`crate::verify_command`]).
    Cmd(Envelope<'a>),
    /// `trust`: a root-signed revocation list, decoded but not verified (a device passes
    /// the raw bytes to [`crate::verify_revocation`]).
    Trust(RootSigned<'a>),
}

impl<'a> Payload<'a> {
    /// Decodes `bytes` as the payload of a topic of `kind`.
    pub fn parse(kind: Kind, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match kind {
            Kind::Hello => Self::Hello(Hello::parse(bytes)?),
            Kind::Offer if bytes.is_empty() => Self::OfferCleared,
            Kind::Offer => Self::Offer(Envelope::parse(bytes)?),
            Kind::Get => Self::Get(Get::parse(bytes)?),
            Kind::Chunk => Self::Chunk(Chunk::parse(bytes)?),
            Kind::Status => Self::Status(Status::parse(bytes)?),
            Kind::Cmd => Self::Cmd(Envelope::parse(bytes)?),
            Kind::Trust => Self::Trust(RootSigned::parse(bytes)?),
        })
    }
}
