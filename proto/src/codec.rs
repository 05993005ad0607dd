//! Frames: a 4-byte big-endian length, then a postcard payload.

use crate::{Request, RequestFrame};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame the daemon reads from a client. Bigger length prefixes are refused before
/// anything is allocated.
pub const MAX_REQUEST_FRAME: usize = 1024 * 1024;

/// The largest frame a client reads from the daemon (a page of jobs, a chunk of output).
pub const MAX_REPLY_FRAME: usize = 16 * 1024 * 1024;

/// How many variants [`Request`] has in this build. A request frame whose variant index is at or
/// beyond this is a newer client's request: answered with `unsupported`, not a dropped connection.
pub const REQUEST_VARIANTS: u32 = 22;

/// A codec for chime frames that refuses length prefixes above `max_frame`.
pub fn frame_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}

/// Why a frame could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("frame has {0} bytes after its message")]
    Trailing(usize),
    #[error("unknown request variant {variant} (this daemon knows {REQUEST_VARIANTS})")]
    UnknownRequest { id: u64, variant: u32 },
    /// A protocol version this build cannot encode or decode (the handshake never agrees on one).
    #[error("protocol version {0} is not one this build speaks")]
    Version(u32),
}

impl FrameError {
    /// The request id, where the frame got far enough to tell it.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Self::UnknownRequest { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Encodes a message as a frame payload.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    Ok(postcard::to_stdvec(message)?)
}

/// Decodes a whole frame payload; bytes left over are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Decodes a request frame of a client that agreed on protocol `version` in the handshake, as the
/// current types (through [`crate::compat`]), telling a request this build does not know (a
/// newer client's) from garbage.
pub fn decode_request(version: u32, payload: &[u8]) -> Result<RequestFrame, FrameError> {
    match crate::compat::decode_request(version, payload) {
        Ok(frame) => Ok(frame),
        Err(err @ FrameError::Version(_)) => Err(err),
        Err(err) => {
            // A RequestFrame is varint(id) then varint(variant) then the variant's fields.
            if let Ok((id, rest)) = postcard::take_from_bytes::<u64>(payload)
                && let Ok((variant, _)) = postcard::take_from_bytes::<u32>(rest)
                && variant >= REQUEST_VARIANTS
            {
                return Err(FrameError::UnknownRequest { id, variant });
            }
            Err(err)
        }
    }
}

/// Encodes a message of the daemon for a client that agreed on protocol `version`, in that
/// version's types (through [`crate::compat`]).
pub fn encode_server_message(
    version: u32,
    message: &crate::ServerMessage,
) -> Result<Vec<u8>, FrameError> {
    crate::compat::encode_server_message(version, message)
}

/// The variant index of a request, as it is encoded on the wire.
pub fn request_variant(request: &Request) -> u32 {
    let bytes = postcard::to_stdvec(request).expect("requests always encode");
    postcard::take_from_bytes::<u32>(&bytes)
        .expect("an encoded enum starts with its variant index")
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_variants_matches_the_enum() {
        let last = Request::Edit(crate::EditJob {
            id: crate::JobId(1),
            revision: 0,
            text: String::new(),
        });
        assert_eq!(request_variant(&last) + 1, REQUEST_VARIANTS);
    }

    #[test]
    fn an_unknown_variant_keeps_its_id() {
        let mut payload = postcard::to_stdvec(&77u64).unwrap();
        payload.extend(postcard::to_stdvec(&(REQUEST_VARIANTS + 3)).unwrap());
        payload.extend([1, 2, 3]);
        match decode_request(crate::PROTOCOL_VERSION, &payload) {
            Err(FrameError::UnknownRequest { id, variant }) => {
                assert_eq!((id, variant), (77, REQUEST_VARIANTS + 3));
            }
            other => panic!("expected an unknown request, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_decode_error_without_id() {
        let err = decode_request(crate::PROTOCOL_VERSION, &[0xff; 3]).unwrap_err();
        assert!(err.request_id().is_none(), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = encode(&RequestFrame {
            id: 1,
            request: Request::Status,
        })
        .unwrap();
        payload.push(0);
        assert!(matches!(
            decode::<RequestFrame>(&payload),
            Err(FrameError::Trailing(1))
        ));
    }
}
