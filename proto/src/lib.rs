//! The wire protocol between `chimed` and its clients.
//!
//! # Wire format
//!
//! A connection is a stream of *frames*. Each frame is a 4-byte big-endian payload length followed
//! by that many bytes of [postcard] (postcard's wire format is frozen for its 1.x series). The
//! length is checked against a maximum *before* any buffer is allocated ([`codec::frame_codec`]),
//! so a hostile length prefix costs nothing.
//!
//! A conversation:
//!
//! 1. The client sends one [`Hello`] frame: a magic number, the highest protocol version it speaks
//!    and a free-form client name.
//! 2. The daemon answers with one [`Handshake`] frame: `Ok(Welcome)` with the version both sides
//!    will use (the lower of the two) and the daemon's version, or `Err(ErrorReply)` with
//!    [`ErrorCode::VersionMismatch`] and a sentence saying what to upgrade.
//! 3. The client then sends [`RequestFrame`]s, each with an id of its choosing. The daemon answers
//!    each with a [`ServerMessage::Reply`] carrying the same id. Replies may come out of order, so a
//!    client may pipeline as many requests as it likes (the daemon bounds how many it works on at
//!    once per connection and stops reading while at the bound).
//!
//! A request the daemon refuses gets a typed [`ErrorReply`] (code, message and, for a job spec,
//! the [`SpecField`] at fault) and the connection stays open. A handshake refused gets a
//! [`HandshakeRefusal`] (code and message), which is frozen with [`Hello`]. A frame that cannot be decoded at all gets an error reply where the request id could
//! be read, and then only that connection is closed.
//!
//! # Evolving the protocol
//!
//! postcard is not self-describing: a value is decoded by position, and an enum by variant index.
//! Nothing has been released yet, so there is one protocol version, 1, and its types are changed
//! in place. From the first release on, these rules hold:
//!
//! - [`Hello`] and [`Handshake`] never change, so that any client can learn that it is too old
//!   or too new.
//! - There is one generation of types: one [`Request`] variant per operation, one [`Response`]
//!   variant per kind of answer, one handler per request in the daemon, and no version in any of
//!   their names. New requests, responses, enum variants and error codes are **appended** at the
//!   end, never inserted, reordered or removed, and each change bumps [`PROTOCOL_VERSION`].
//! - **An optional field is added to the current type**, not as a new message: `SubmitJob` gains
//!   `priority: Option<u8>`, appended after its last field, and its one handler reads it. The
//!   released version's types are frozen in [`compat`] (`compat::v1`: a copy of the types that
//!   changed and of the enums and frames that hold them; everything else is used from the crate
//!   as it is), with two functions: `upgrade`, which turns an old request into the current one
//!   (the new field gets the value that means what the old version meant: `None`), and
//!   `downgrade`, which turns a current reply into the old one (dropping what the old client
//!   cannot show, or mapping a new variant to its nearest old one). [`codec::decode_request`]
//!   and [`codec::encode_server_message`] are given the version agreed in the handshake and go
//!   through them, so handlers and the engine only ever see the current types, and code that
//!   knows versions lives in that one module at the edge. The test `compat::example` carries
//!   this out for such a protocol 2.
//! - Cost of the upgrade, measured by the ignored test `compat::example::upgrade_cost`
//!   (`cargo test -p chime-proto --release -- --ignored --nocapture upgrade_cost`; release
//!   build, 10^6 decodes each, three runs on this busy 2-core machine): a 140-byte submission
//!   decoded as protocol 1 and upgraded takes 320-322 ns, against 304-306 ns for decoding the
//!   protocol 2 shape directly (about 16 ns, 5%: moving the boxed spec into its new box); the
//!   current version through [`compat`] takes 305-307 ns against 297-303 ns for a bare
//!   `codec::decode` (within noise); a `Status` frame takes 9-13 ns either way. All of it is
//!   noise beside the ~0.3 ms commit every submission waits for. The upgrade adds no byte on the
//!   wire (the protocol 2 frame is 141 bytes, one more for the new field; a trailing extension
//!   section would instead cost bytes on every message of every client, and an extension
//!   decoded by hand in each handler that reads it). What it costs is code, at the edge: one
//!   frozen copy of each changed type and of the enums and frames that hold it per supported
//!   old version, and a match arm per variant, all deleted when that version's support ends.
//! - Serde attributes that change the layout (`skip_serializing_if`, `flatten`, `untagged`) are not
//!   used on wire types.
//! - Encoded frames of every released version are checked in under `proto/tests/fixtures/vN/` and
//!   decoded by a test (through [`codec::decode_request`] with that version), so a change that
//!   would break an old client fails the build. Today `v1/` holds protocol 1, to be frozen at
//!   the first release.

pub mod codec;
pub mod compat;
pub mod error;
pub mod event;
pub mod human;
pub mod job;
pub mod request;
pub mod response;
pub mod spec;

pub use codec::{FrameError, MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
pub use error::{ErrorCode, ErrorReply};
pub use event::*;
pub use job::*;
pub use request::*;
pub use response::*;
pub use spec::SpecField;

use serde::{Deserialize, Serialize};

/// The first four bytes of every [`Hello`]: `"chm\x01"`, so that a stray client of another
/// protocol is recognised at once.
pub const MAGIC: u32 = u32::from_be_bytes(*b"chm\x01");

/// The protocol version this build speaks. See the crate docs for the rule that bumps it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The first frame a client sends. Frozen: never changes shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The highest protocol version the client speaks.
    pub version: u32,
    /// A short name for logs, such as `chimectl 0.1.0`.
    pub client: String,
}

impl Hello {
    /// A hello for this build of the protocol.
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: client.into(),
        }
    }
}

/// The daemon's answer to [`Hello`]. Frozen: never changes shape.
pub type Handshake = Result<Welcome, HandshakeRefusal>;

/// Why the daemon will not talk to this client: too old or too new, too many connections, not a
/// chime hello. Frozen like [`Hello`], so that any client can read why it was turned away (an
/// [`ErrorReply`] may gain fields; this never does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeRefusal {
    pub code: ErrorCode,
    pub message: String,
}

impl From<ErrorReply> for HandshakeRefusal {
    fn from(refusal: ErrorReply) -> Self {
        Self {
            code: refusal.code,
            message: refusal.message,
        }
    }
}

/// The daemon accepted the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both sides use from now on.
    pub version: u32,
    /// The daemon's package version, such as `0.1.0`.
    pub daemon_version: String,
    /// The uid the daemon sees for this connection (from `SO_PEERCRED`).
    pub uid: u32,
}

/// Every frame after the handshake that a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client; echoed in the reply.
    pub id: u64,
    pub request: Request,
}

/// Every frame after the handshake that the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The answer to the request with the same id.
    Reply(ReplyFrame),
    /// Part of the stream that follows a [`Request::Watch`].
    Watch(WatchFrame),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub id: u64,
    pub result: Result<Response, ErrorReply>,
}
