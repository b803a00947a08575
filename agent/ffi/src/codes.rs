//! Error codes: every failure of a `mota_*` call is one negative `int32_t`, never a
//! panic. `Error` is the Rust side; cbindgen writes it into the header as `mota_error`
//! (`MOTA_ERROR_*`).

use mota_agent::AgentError;

/// Why a `mota_*` call failed. `MOTA_ERROR_CONFIG`, `MOTA_ERROR_STATE` and
/// `MOTA_ERROR_FLASH` come from the agent itself: it has stopped, reset the device (the
/// record on flash is the truth; RAM may be ahead of it). `mota_error_must_reboot` tells.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A required pointer (or callback) is NULL.
    NullPointer = -1,
    /// A pointer is not aligned for the type it points to.
    Misaligned = -2,
    /// A string is not UTF-8.
    Utf8 = -3,
    /// A length is out of range: a string without its NUL within its bound, an output
    /// buffer too small, a length larger than memory.
    Length = -4,
    /// A value is out of range: an unknown kind, an id with forbidden characters, no root
    /// key, a zero trial count.
    Argument = -5,
    /// `mota_agent_boot` has not succeeded (or the agent stopped after an error that
    /// means reboot).
    NotBooted = -6,
    /// `mota_agent_boot` already ran since reset (one agent per firmware, booted once).
    AlreadyBooted = -7,
    /// Called while another `mota_*` call runs (from a callback or an interrupt).
    Busy = -8,
    /// The platform's flash geometry differs from the library's (`MOTA_FLASH_WRITE_SIZE`,
    /// `MOTA_FLASH_ERASE_SIZE`), or a region is not a whole number of erase pages.
    Geometry = -9,
    /// The configuration contradicts the flash or the arena (the arena is smaller than
    /// `max_arena_bytes` or 4098 bytes, a name is too long, ...).
    Config = -10,
    /// The state region failed (flash error, corrupt beyond repair, too small, written by
    /// an incompatible agent): reboot.
    State = -11,
    /// A slot flash operation failed where no report could be made: reboot.
    Flash = -12,
    /// No validator: `validate` is NULL and `slot_base` is NULL (or the library was built
    /// without the bundled validator).
    NoValidator = -13,
    /// `publish` is NULL (only the bundled session can drive this agent).
    NoPublish = -14,
    /// `mota_session_poll` before `mota_session_start`.
    SessionNotStarted = -15,
    /// `mota_session_start` was already called.
    SessionAlreadyStarted = -16,
}

impl Error {
    /// The code returned to C.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The code's stable name, NUL-terminated (for logs).
    pub const fn name(self) -> &'static core::ffi::CStr {
        match self {
            Self::NullPointer => c"null_pointer",
            Self::Misaligned => c"misaligned",
            Self::Utf8 => c"utf8",
            Self::Length => c"length",
            Self::Argument => c"argument",
            Self::NotBooted => c"not_booted",
            Self::AlreadyBooted => c"already_booted",
            Self::Busy => c"busy",
            Self::Geometry => c"geometry",
            Self::Config => c"config",
            Self::State => c"state_region",
            Self::Flash => c"flash",
            Self::NoValidator => c"no_validator",
            Self::NoPublish => c"no_publish",
            Self::SessionNotStarted => c"session_not_started",
            Self::SessionAlreadyStarted => c"session_already_started",
        }
    }

    /// All codes, for lookups by number.
    /// cbindgen:ignore
    pub const ALL: [Error; 16] = [
        Self::NullPointer,
        Self::Misaligned,
        Self::Utf8,
        Self::Length,
        Self::Argument,
        Self::NotBooted,
        Self::AlreadyBooted,
        Self::Busy,
        Self::Geometry,
        Self::Config,
        Self::State,
        Self::Flash,
        Self::NoValidator,
        Self::NoPublish,
        Self::SessionNotStarted,
        Self::SessionAlreadyStarted,
    ];

    /// The code with this number.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The agent stopped: the device must reset (`mota_agent_boot` runs again after it).
    pub const fn must_reboot(self) -> bool {
        matches!(self, Self::Config | Self::State | Self::Flash)
    }
}

impl From<AgentError> for Error {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Config(_) => Self::Config,
            AgentError::Store(_) => Self::State,
            AgentError::Flash => Self::Flash,
        }
    }
}

/// `Ok(n)` as `n`, `Err(e)` as its negative code.
pub fn status(result: Result<i32, Error>) -> i32 {
    match result {
        Ok(n) => n,
        Err(e) => e.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_negative_and_named() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert!(e.code() < 0);
            assert_eq!(Error::from_code(e.code()), Some(*e));
            assert!(!e.name().is_empty());
            assert!(Error::ALL[..i].iter().all(|other| other.code() != e.code()));
        }
        assert_eq!(Error::from_code(0), None);
    }
}
