//! A connection to chimed: connect, handshake, send requests, read replies.

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use chime_proto::codec::{self, frame_codec};
use chime_proto::{
    ErrorReply, Handshake, Hello, MAX_REPLY_FRAME, ReplyFrame, Request, RequestFrame, Response,
    ServerMessage,
};
use futures::{SinkExt, StreamExt};
use std::path::Path;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[derive(Debug)]
pub struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    next_id: u64,
}

/// A request the daemon refused: its typed error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub ErrorReply);

impl Client {
    /// Connects and shakes hands. The error says which socket was tried and how to start chimed.
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket).await.map_err(|err| {
            let hint = match err.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is chimed running? start it with `chimed` (or `systemctl start chimed`), or point --socket or CHIME_SOCKET at its socket"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "you may not use this socket; the system daemon's socket is for root and the chime group"
                }
                _ => "is chimed running?",
            };
            anyhow!("cannot connect to chimed at {}: {err}; {hint}", socket.display())
        })?;
        let mut framed = Framed::new(stream, frame_codec(MAX_REPLY_FRAME));
        let hello = codec::encode(&Hello::new(concat!("chimectl ", env!("CARGO_PKG_VERSION"))))?;
        framed
            .send(Bytes::from(hello))
            .await
            .context("sending the handshake")?;
        let frame = framed
            .next()
            .await
            .with_context(|| {
                format!(
                    "chimed at {} closed the connection during the handshake",
                    socket.display()
                )
            })?
            .context("reading the handshake")?;
        let handshake: Handshake = codec::decode(&frame)
            .with_context(|| format!("{} did not answer like chimed", socket.display()))?;
        let welcome = match handshake {
            Ok(welcome) => welcome,
            Err(refusal) => bail!("chimed refused the connection: {}", refusal.message),
        };
        if welcome.version < chime_proto::PROTOCOL_VERSION {
            bail!(
                "chimed at {} is version {} and speaks protocol {}; this chimectl needs protocol {}: upgrade chimed",
                socket.display(),
                welcome.daemon_version,
                welcome.version,
                chime_proto::PROTOCOL_VERSION
            );
        }
        Ok(Self { framed, next_id: 1 })
    }

    /// Sends one request and waits for its reply. A refusal is an error of type [`Refused`].
    pub async fn call(&mut self, request: Request) -> anyhow::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = codec::encode(&RequestFrame { id, request })?;
        self.framed
            .send(Bytes::from(frame))
            .await
            .context("sending the request")?;
        loop {
            let frame = self
                .framed
                .next()
                .await
                .context("chimed closed the connection before answering")?
                .context("reading the reply")?;
            let message: ServerMessage = codec::decode(&frame)
                .context("the reply does not decode; are chimectl and chimed the same version?")?;
            if let ServerMessage::Reply(ReplyFrame { id: got, result }) = message
                && (got == id || got == 0)
            {
                return result.map_err(|refusal| Refused(refusal).into());
            }
        }
    }

    /// The next frame of a watch started with [`Client::call`] (`Request::Watch`); `None` when
    /// chimed closed the connection (it stopped).
    pub async fn next_watch(&mut self) -> anyhow::Result<Option<chime_proto::WatchItem>> {
        loop {
            let Some(frame) = self.framed.next().await else {
                return Ok(None);
            };
            let frame = frame.context("reading events")?;
            match codec::decode(&frame).context("an event frame does not decode")? {
                ServerMessage::Watch(watch) => return Ok(Some(watch.item)),
                ServerMessage::Reply(ReplyFrame {
                    result: Err(refusal),
                    ..
                }) => return Err(Refused(refusal).into()),
                ServerMessage::Reply(_) => {}
            }
        }
    }
}
