//! One client connection: handshake, then requests answered as they complete.
//!
//! The peer's uid comes from `SO_PEERCRED` when the connection is accepted; every request is
//! judged by it. After the handshake the task reads request frames and starts each one at once
//! (up to [`MAX_IN_FLIGHT`]; beyond that it stops reading, which pushes back on the client), and
//! writes replies in the order they complete. Replies are fed to the socket without flushing and
//! flushed once no more are ready: one write for a burst of pipelined replies.
//!
//! Limits (see [`crate::limits`]): a user beyond `connections_per_user` open connections, or
//! beyond chimed's connection limit, gets a `busy` refusal naming the limit (root always gets
//! in); a connection that sends no hello within `handshake_timeout`, or that has nothing in
//! flight for `idle_timeout`, is closed.
//!
//! Misbehaviour ends only this connection, after one warning in the log: a handshake that is not
//! a chime hello or does not arrive within the handshake timeout, an oversized length prefix
//! (refused before allocating), or a frame that does not decode (answered with a `bad_request`
//! reply with id 0, the id reserved for errors about the connection itself). A request this build
//! does not know (a newer client) is answered with `unsupported` and the connection stays open.
//!
//! Versions: every request frame is decoded, and every frame sent after the handshake encoded,
//! for the version agreed in the handshake, through `chime_proto::compat` (here the only code that
//! is told the version); the handlers see only the current protocol's types.

use crate::context::Context;
use crate::limits::Limits;
use crate::requests;
use bytes::Bytes;
use chime_proto::codec::{self, FrameError, frame_codec};
use chime_proto::{
    ErrorCode, ErrorReply, Handshake, Hello, MAGIC, MAX_REPLY_FRAME, MAX_REQUEST_FRAME,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, ReplyFrame, ServerMessage, Welcome,
};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::{FramedRead, FramedWrite};

/// A place among the connections: one of chimed's connection slots, or root's way in beside them.
#[derive(Debug)]
pub enum Permit {
    Slot(OwnedSemaphorePermit),
    Root,
}

/// One connection counted against its user's `connections_per_user`, until dropped.
struct UserSlot<'a> {
    context: &'a Context,
    uid: u32,
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .context
            .connections_by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}

/// Counts a connection of `uid` against its limit; `None` when the user has all they may have.
fn user_slot(context: &Context, uid: u32, limit: u32) -> Option<UserSlot<'_>> {
    let mut counts = context
        .connections_by_uid
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let n = counts.entry(uid).or_default();
    if *n >= limit {
        return None;
    }
    *n += 1;
    Some(UserSlot { context, uid })
}

/// Most requests of one connection being worked on at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// Serves one connection until the client closes it or misbehaves.
pub async fn serve(
    stream: UnixStream,
    conn_id: u64,
    context: Arc<Context>,
    permit: Option<Permit>,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(err) => {
            tracing::warn!(conn_id, error = %err, "cannot read the peer's credentials; closing");
            return;
        }
    };
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, frame_codec(MAX_REQUEST_FRAME));
    let mut writer = FramedWrite::new(write, frame_codec(MAX_REPLY_FRAME));

    let limits = context.limits.get();
    // Held until the connection closes.
    let (_permit, _user_slot) = match admit(&context, &limits, conn_id, uid, permit) {
        Ok(places) => places,
        Err(refusal) => {
            let _ = send(&mut writer, &Handshake::Err(refusal.into())).await;
            return;
        }
    };
    // The account behind the uid, once per connection (NSS may block: not on a worker),
    // looked up while the handshake is under way: a client such as chimectl sends its request
    // as soon as it has been welcomed.
    let lookup = tokio::task::spawn_blocking(move || requests::Peer::of(uid));
    let Some(version) = handshake(
        &mut reader,
        &mut writer,
        conn_id,
        uid,
        limits.handshake_timeout,
    )
    .await
    else {
        return;
    };
    let peer = lookup.await.unwrap_or(requests::Peer { uid, user: None });
    context.connections.fetch_add(1, Ordering::Relaxed);
    let idle = limits.idle_timeout;
    drop(limits);
    requests_loop(
        &mut reader,
        &mut writer,
        conn_id,
        peer,
        version,
        idle,
        &context,
    )
    .await;
    context.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Gives a connection of `uid` its places: the one the server took among chimed's connections
/// (`permit`, `None` when there was none left) and one among the user's (none for a user exempt
/// from the limit). Errors: the `busy` refusal to send the client, which names the limit.
fn admit<'a>(
    context: &'a Context,
    limits: &Limits,
    conn_id: u64,
    uid: u32,
    permit: Option<Permit>,
) -> Result<(Permit, Option<UserSlot<'a>>), ErrorReply> {
    let Some(permit) = permit else {
        tracing::warn!(conn_id, uid, "too many connections; refusing one");
        return Err(ErrorReply::new(
            ErrorCode::Busy,
            format!(
                "chimed has all the connections it may have open ({}); try again shortly",
                context.info.max_connections
            ),
        ));
    };
    if limits.is_exempt(uid) {
        return Ok((permit, None));
    }
    match user_slot(context, uid, limits.connections_per_user) {
        Some(slot) => Ok((permit, Some(slot))),
        None => {
            tracing::warn!(
                conn_id,
                uid,
                limit = limits.connections_per_user,
                "a user has all the connections they may have; refusing one"
            );
            Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "you have {} connections to chimed open, the most a user may have ({}); close some",
                    limits.connections_per_user,
                    limits.said("connections_per_user")
                ),
            ))
        }
    }
}

/// Reads the client's hello, waiting at most `timeout`, and answers it: the protocol version the
/// connection speaks, or `None` when it is to close (no hello in time, the client left, or it was
/// refused: too old, or not a chime client).
async fn handshake(
    reader: &mut Reader,
    writer: &mut Writer,
    conn_id: u64,
    uid: u32,
    timeout: Duration,
) -> Option<u32> {
    let hello = match tokio::time::timeout(timeout, reader.next()).await {
        Err(_) => {
            tracing::warn!(conn_id, uid, "no handshake within the time limit; closing");
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(err))) => {
            tracing::warn!(conn_id, uid, error = %err, "unreadable handshake frame; closing");
            return None;
        }
        Ok(Some(Ok(frame))) => greet(&frame),
    };
    let version = match hello {
        Greeting::Welcome { hello, version } => {
            tracing::debug!(conn_id, uid, client = %hello.client, version = hello.version, "client connected");
            version
        }
        Greeting::TooOld { hello, refusal } => {
            tracing::warn!(conn_id, uid, client = %hello.client, version = hello.version, "client too old; closing");
            let _ = send(writer, &Handshake::Err(refusal.into())).await;
            return None;
        }
        Greeting::NotHello { refusal } => {
            tracing::warn!(conn_id, uid, "first frame is not a chime hello; closing");
            let _ = send(writer, &Handshake::Err(refusal.into())).await;
            return None;
        }
    };
    send(writer, &welcome(version, uid)).await.ok()?;
    Some(version)
}

/// What the first frame of a connection decides.
#[derive(Debug)]
pub enum Greeting {
    /// A chime hello from a client chimed can serve: the connection speaks `version`, the lower
    /// of the client's and chimed's.
    Welcome { hello: Hello, version: u32 },
    /// A chime hello from a client older than [`MIN_PROTOCOL_VERSION`]: sent the refusal, then
    /// closed.
    TooOld { hello: Hello, refusal: ErrorReply },
    /// Not a chime hello at all: sent the refusal, then closed.
    NotHello { refusal: ErrorReply },
}

/// Reads a connection's first frame (its payload): the handshake.
pub fn greet(frame: &[u8]) -> Greeting {
    match codec::decode::<Hello>(frame) {
        Ok(hello) if hello.magic == MAGIC => {
            if hello.version < MIN_PROTOCOL_VERSION {
                let refusal = ErrorReply::new(
                    ErrorCode::VersionMismatch,
                    format!(
                        "{} speaks protocol {}, but this chimed needs {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; upgrade the client",
                        hello.client, hello.version
                    ),
                );
                return Greeting::TooOld { hello, refusal };
            }
            let version = hello.version.min(PROTOCOL_VERSION);
            Greeting::Welcome { hello, version }
        }
        _ => Greeting::NotHello {
            refusal: ErrorReply::new(
                ErrorCode::VersionMismatch,
                "expected a chime hello frame; is this a chime client?",
            ),
        },
    }
}

/// The answer to a hello chimed accepts: the version agreed, and the uid chimed sees.
pub fn welcome(version: u32, uid: u32) -> Handshake {
    Ok(Welcome {
        version,
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        uid,
    })
}

/// The refusal of a request this build does not know (a newer client's): the connection stays
/// open.
pub fn unsupported(variant: u32) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Unsupported,
        format!(
            "this chimed (protocol {PROTOCOL_VERSION}) does not know request {variant}; upgrade chimed"
        ),
    )
}

/// The payload of the frame that answers request `id` on a connection of protocol `version`:
/// the reply, or in its place a `too_large` refusal when the reply would not fit in a frame
/// ([`MAX_REPLY_FRAME`]), so that a client never gets a frame it must refuse.
///
/// Errors: the reply does not encode (a bug: every reply type encodes, for every version the
/// handshake agrees on).
pub fn reply_payload(
    version: u32,
    id: u64,
    result: Result<chime_proto::Response, ErrorReply>,
) -> Result<Vec<u8>, FrameError> {
    let payload =
        codec::encode_server_message(version, &ServerMessage::Reply(ReplyFrame { id, result }))?;
    if payload.len() <= MAX_REPLY_FRAME {
        return Ok(payload);
    }
    codec::encode_server_message(
        version,
        &ServerMessage::Reply(ReplyFrame {
            id,
            result: Err(ErrorReply::new(
                ErrorCode::TooLarge,
                "the reply is larger than a frame may be; ask for less (a smaller --limit)",
            )),
        }),
    )
}

type Reader = FramedRead<tokio::net::unix::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>;
type Writer =
    FramedWrite<tokio::net::unix::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>;

async fn requests_loop(
    reader: &mut Reader,
    writer: &mut Writer,
    conn_id: u64,
    peer: requests::Peer,
    version: u32,
    idle: Duration,
    context: &Arc<Context>,
) {
    let uid = peer.uid;
    let peer = Arc::new(peer);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    // Reset whenever something arrives or completes; only matters while nothing is in flight.
    let mut idle_until = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(idle_until), if in_flight.is_empty() => {
                tracing::debug!(conn_id, uid, idle_ms = idle.as_millis() as u64, "idle connection closed");
                break;
            }
            frame = reader.next(), if reading && in_flight.len() < MAX_IN_FLIGHT => match frame.inspect(|_| idle_until = tokio::time::Instant::now() + idle) {
                None => reading = false,
                Some(Err(err)) => {
                    tracing::warn!(conn_id, uid, error = %err, "unreadable frame; closing the connection");
                    let _ = feed_reply(writer, version, 0, Err(ErrorReply::new(ErrorCode::TooLarge, format!("unreadable frame: {err}")))).await;
                    reading = false;
                }
                Some(Ok(frame)) => match codec::decode_request(version, &frame) {
                    Ok(chime_proto::RequestFrame { id, request: chime_proto::Request::Watch(query) }) => {
                        // A watch takes over the connection: answer what is in flight first.
                        while let Some((id, result)) = in_flight.next().await {
                            if feed_reply(writer, version, id, result).await.is_err() {
                                return;
                            }
                        }
                        if flush(writer).await.is_err() {
                            return;
                        }
                        tracing::debug!(conn_id, uid, request_id = id, "watch");
                        crate::watch::serve(reader, writer, context, version, uid, id, query).await;
                        return;
                    }
                    Ok(request) => {
                        tracing::debug!(conn_id, uid, request_id = request.id, "request");
                        let context = Arc::clone(context);
                        let peer = Arc::clone(&peer);
                        in_flight.push(async move {
                            let result = requests::handle(&context, &peer, request.request).await;
                            (request.id, result)
                        }.boxed());
                    }
                    Err(FrameError::UnknownRequest { id, variant }) => {
                        tracing::warn!(conn_id, uid, variant, "request unknown to this chimed");
                        if feed_reply(writer, version, id, Err(unsupported(variant))).await.is_err() || flush(writer).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(conn_id, uid, error = %err, "request frame does not decode; closing the connection");
                        let _ = feed_reply(writer, version, 0, Err(ErrorReply::new(ErrorCode::BadRequest, err.to_string()))).await;
                        reading = false;
                    }
                },
            },
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                idle_until = tokio::time::Instant::now() + idle;
                if feed_reply(writer, version, id, result).await.is_err() {
                    return;
                }
                // Everything else that is ready goes out in the same write.
                while let Some(Some((id, result))) = in_flight.next().now_or_never() {
                    if feed_reply(writer, version, id, result).await.is_err() {
                        return;
                    }
                }
                if flush(writer).await.is_err() {
                    return;
                }
            }
            else => break,
        }
        if !reading && in_flight.is_empty() {
            break;
        }
    }
    let _ = flush(writer).await;
}

async fn feed_reply(
    writer: &mut Writer,
    version: u32,
    id: u64,
    result: Result<chime_proto::Response, ErrorReply>,
) -> Result<(), ()> {
    let payload = match reply_payload(version, id, result) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a reply");
            return Err(());
        }
    };
    writer.feed(Bytes::from(payload)).await.map_err(|_| ())
}

async fn flush(writer: &mut Writer) -> Result<(), std::io::Error> {
    SinkExt::<Bytes>::flush(writer).await
}

async fn send<T: serde::Serialize>(writer: &mut Writer, message: &T) -> Result<(), ()> {
    let payload = codec::encode(message).map_err(|_| ())?;
    writer.send(Bytes::from(payload)).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chime_proto::{JobId, LogChunk, LogSegment, Response, RunId, Stream};

    fn hello(magic: u32, version: u32) -> Vec<u8> {
        codec::encode(&Hello {
            magic,
            version,
            client: "test".into(),
        })
        .unwrap()
    }

    #[test]
    fn a_hello_agrees_on_the_lower_version() {
        for (asked, agreed) in [
            (1, 1),
            (PROTOCOL_VERSION, PROTOCOL_VERSION),
            (u32::MAX, PROTOCOL_VERSION),
        ] {
            match greet(&hello(MAGIC, asked)) {
                Greeting::Welcome { version, .. } => assert_eq!(version, agreed),
                other => panic!("{asked}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_client_too_old_or_not_chime_is_refused() {
        assert!(matches!(
            greet(&hello(MAGIC, MIN_PROTOCOL_VERSION - 1)),
            Greeting::TooOld { refusal, .. } if refusal.code == ErrorCode::VersionMismatch
        ));
        for frame in [
            hello(MAGIC ^ 1, PROTOCOL_VERSION),
            b"GET / HTTP/1.1\r\n".to_vec(),
            vec![],
        ] {
            assert!(matches!(
                greet(&frame),
                Greeting::NotHello { refusal } if refusal.code == ErrorCode::VersionMismatch
            ));
        }
    }

    #[test]
    fn a_reply_too_large_for_a_frame_becomes_a_refusal() {
        let logs = |len: usize| {
            Ok(Response::Logs(LogChunk {
                job: JobId(1),
                run: RunId(1),
                segments: vec![LogSegment {
                    stream: Stream::Stdout,
                    data: vec![7; len],
                }],
                from: 0,
                next: len as u64,
                dropped: 0,
                running: false,
            }))
        };
        let fits = reply_payload(PROTOCOL_VERSION, 9, logs(1024)).unwrap();
        let back: ServerMessage = codec::decode(&fits).unwrap();
        assert_eq!(
            back,
            ServerMessage::Reply(ReplyFrame {
                id: 9,
                result: logs(1024)
            })
        );

        let payload = reply_payload(PROTOCOL_VERSION, 9, logs(MAX_REPLY_FRAME)).unwrap();
        assert!(payload.len() <= MAX_REPLY_FRAME);
        match codec::decode::<ServerMessage>(&payload).unwrap() {
            ServerMessage::Reply(ReplyFrame {
                id: 9,
                result: Err(refusal),
            }) => {
                assert_eq!(refusal.code, ErrorCode::TooLarge);
            }
            other => panic!("{other:?}"),
        }
    }
}
