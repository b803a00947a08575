//! The bundled MQTT session (`mota-agent-mqtt`) for C firmware that has only a byte
//! stream: two C callbacks become an `embedded_io` stream, and the session drives the
//! agent (hello, messages, ticks) from `mota_session_poll`.

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write};
use mota_agent_mqtt::{Session, SessionConfig, SessionError};
use static_cell::StaticCell;

use crate::api::{self, Stop};
use crate::boundary;
use crate::codes::Error;
use crate::platform::CClock;
use crate::types::{MOTA_OK, MOTA_SESSION_CONNECTED, SessionProgress, StreamReadFn, StreamWriteFn};

// The header's constants are the session's.
const _: () =
    assert!(crate::types::MOTA_SESSION_OVERHEAD == mota_agent_mqtt::OVERHEAD + mota_proto::topic::MAX_TOPIC_LEN + 32);
const _: () = assert!(crate::types::MOTA_SESSION_MIN_MESSAGE == mota_proto::limits::MAX_ENVELOPE_LEN);

/// Milliseconds between the agent's timer ticks (`Agent::poll`) in the session.
pub const TICK_MS: u64 = 250;

/// The session over the C stream.
pub type CSession = Session<'static, CStream, CClock>;

static SESSION: StaticCell<CSession> = StaticCell::new();

/// The C stream callbacks with a few bytes read ahead (`ReadReady` must say whether a
/// read would find bytes, and the C read does not block).
pub struct CStream {
    read: StreamReadFn,
    write: StreamWriteFn,
    ctx: boundary::Ctx,
    ahead: [u8; 64],
    start: usize,
    end: usize,
}

impl CStream {
    /// The stream of these callbacks.
    pub fn new(read: StreamReadFn, write: StreamWriteFn, ctx: boundary::Ctx) -> Self {
        Self { read, write, ctx, ahead: [0; 64], start: 0, end: 0 }
    }

    fn fill(&mut self) -> Result<(), StreamError> {
        if self.start == self.end {
            let n = boundary::stream_read(self.read, self.ctx, &mut self.ahead).ok_or(StreamError)?;
            self.start = 0;
            self.end = n.min(self.ahead.len());
        }
        Ok(())
    }
}

/// The C callback returned a negative value: the link is gone (the session reconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamError;

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the stream callback failed")
    }
}

impl core::error::Error for StreamError {}

impl embedded_io::Error for StreamError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BrokenPipe
    }
}

impl ErrorType for CStream {
    type Error = StreamError;
}

impl ReadReady for CStream {
    fn read_ready(&mut self) -> Result<bool, StreamError> {
        self.fill()?;
        Ok(self.start < self.end)
    }
}

impl Read for CStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        self.fill()?;
        let ahead = self.ahead.get(self.start..self.end).unwrap_or_default();
        let n = ahead.len().min(buf.len());
        buf[..n].copy_from_slice(&ahead[..n]);
        self.start += n;
        Ok(n)
    }
}

impl Write for CStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        boundary::stream_write(self.write, self.ctx, buf).ok_or(StreamError)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// `mota_session_start`.
pub fn start(
    stream: CStream,
    password: Option<&'static str>,
    keep_alive_s: u16,
    buffer: &'static mut [u8],
) -> Result<i32, Error> {
    api::with_running_or(|r| {
        if r.session.is_some() {
            return Err(Stop::Call(Error::SessionAlreadyStarted));
        }
        let settings = SessionConfig { device_id: r.device_id, password, keep_alive_s, tick_ms: TICK_MS };
        let session = Session::new(stream, CClock(r.platform), &settings, r.chunk_bytes, buffer).map_err(|e| {
            Stop::Call(match e {
                SessionError::Buffer => Error::Length,
                SessionError::DeviceId | SessionError::Settings => Error::Argument,
            })
        })?;
        let session = SESSION.try_init(session).ok_or(Stop::Call(Error::SessionAlreadyStarted))?;
        r.session = Some(session);
        Ok(MOTA_OK)
    })
}

/// `mota_session_poll`: `MOTA_SESSION_CONNECTED` when it (re)connected in this call.
pub fn poll(out: Option<&mut SessionProgress>) -> Result<i32, Error> {
    api::with_running_or(|r| {
        let session = r.session.as_deref_mut().ok_or(Stop::Call(Error::SessionNotStarted))?;
        let progress = session.poll(r.agent).map_err(Stop::Agent)?;
        if let Some(out) = out {
            *out = SessionProgress { connected: progress.connected, messages: progress.messages };
        }
        Ok(if progress.connected { MOTA_SESSION_CONNECTED } else { MOTA_OK })
    })
}

/// Whether the session is connected, subscribed and has said hello.
pub fn is_online() -> Result<i32, Error> {
    api::with_running_or(|r| {
        let session = r.session.as_deref().ok_or(Stop::Call(Error::SessionNotStarted))?;
        Ok(i32::from(session.is_online()))
    })
}

#[cfg(test)]
mod tests {
    use crate::types::{MOTA_SESSION_MIN_MESSAGE, MOTA_SESSION_OVERHEAD};

    /// The header's `MOTA_SESSION_BUFFER_BYTES(chunk)` formula, against the session's.
    #[test]
    fn buffer_formula_matches_the_session() {
        for chunk in [1u32, 64, 1024, 1472, 1473, 4096, 16384] {
            let c = chunk as usize + 64;
            let formula =
                MOTA_SESSION_OVERHEAD + if c > MOTA_SESSION_MIN_MESSAGE { c } else { MOTA_SESSION_MIN_MESSAGE };
            assert_eq!(formula, mota_agent_mqtt::buffer_len(chunk), "chunk {chunk}");
        }
    }
}
