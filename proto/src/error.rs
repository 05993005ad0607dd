//! Typed refusals: what a client gets instead of a dropped connection.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a request was refused. Sent as a `u16`, so a client that does not know a newer code still
/// decodes the reply and sees [`ErrorCode::Other`] with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// The request is malformed or a field is out of range.
    BadRequest,
    /// No job with that id or name (or none that this user may see).
    NotFound,
    /// The job belongs to another user.
    PermissionDenied,
    /// A unique name is taken.
    Conflict,
    /// The job is in a state where the request makes no sense (cancel a finished job).
    InvalidState,
    /// A field or the frame is larger than the daemon accepts.
    TooLarge,
    /// The daemon does not know this request (it is older than the client).
    Unsupported,
    /// The daemon is at a limit (connections, requests in flight); try again.
    Busy,
    /// The daemon is shutting down and takes no more changes.
    ShuttingDown,
    /// Something failed inside the daemon (storage); see its log.
    Internal,
    /// The handshake failed: wrong magic or no common protocol version.
    VersionMismatch,
    /// The job's stored record is damaged: kept as it is, never run; the message says what
    /// to do.
    Damaged,
    /// A code this build does not know.
    Other(u16),
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        match code {
            1 => Self::BadRequest,
            2 => Self::NotFound,
            3 => Self::PermissionDenied,
            4 => Self::Conflict,
            5 => Self::InvalidState,
            6 => Self::TooLarge,
            7 => Self::Unsupported,
            8 => Self::Busy,
            9 => Self::ShuttingDown,
            10 => Self::Internal,
            11 => Self::VersionMismatch,
            12 => Self::Damaged,
            other => Self::Other(other),
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::BadRequest => 1,
            ErrorCode::NotFound => 2,
            ErrorCode::PermissionDenied => 3,
            ErrorCode::Conflict => 4,
            ErrorCode::InvalidState => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::Unsupported => 7,
            ErrorCode::Busy => 8,
            ErrorCode::ShuttingDown => 9,
            ErrorCode::Internal => 10,
            ErrorCode::VersionMismatch => 11,
            ErrorCode::Damaged => 12,
            ErrorCode::Other(other) => other,
        }
    }
}

impl ErrorCode {
    /// A stable lowercase word for scripts (`--json`) and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::Conflict => "conflict",
            Self::InvalidState => "invalid_state",
            Self::TooLarge => "too_large",
            Self::Unsupported => "unsupported",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::VersionMismatch => "version_mismatch",
            Self::Damaged => "damaged",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(code) => write!(f, "error {code}"),
            code => f.write_str(code.as_str()),
        }
    }
}

/// A refusal: a code for programs and a sentence for people. The message is lowercase, names the
/// object and, where one is known, the remedy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// The field of a job spec the refusal is about; the message then says what is wrong with
    /// it without naming it (clients name it their way: an option, a key and line).
    pub field: Option<crate::SpecField>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A refused spec: [`ErrorCode::BadRequest`] about `field`.
    pub fn about(field: crate::SpecField, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(ErrorCode::BadRequest, message)
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{}: {}", field.key(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ErrorReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_u16() {
        for n in 0..64u16 {
            assert_eq!(u16::from(ErrorCode::from(n)), n);
        }
    }
}
