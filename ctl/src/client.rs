//! A connection to chimed: connect (to a socket served by root or the user, [`crate::socket`]),
//! handshake, send requests, read replies.

use crate::socket::Socket;
use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use chime_proto::codec::{self, frame_codec};
use chime_proto::{
    ErrorReply, Handshake, Hello, MAX_REPLY_FRAME, ReplyFrame, Request, RequestFrame, Response,
    ServerMessage,
};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[derive(Debug)]
pub struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    next_id: u64,
    /// For messages.
    socket: std::path::PathBuf,
}

/// A request the daemon refused: its typed error. A refused job spec names its field, shown as
/// the option that set it (`--every: the interval must be longer than zero`).
#[derive(Debug, thiserror::Error)]
pub struct Refused(pub ErrorReply);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.field {
            Some(field) => write!(f, "{}: {}", field.flag(), self.0.message),
            None => f.write_str(&self.0.message),
        }
    }
}

/// How long connecting and the handshake may take: a chimed that accepts but never answers
/// (wedged, or a socket whose owner stopped reading) must not hang a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may wait for its answer, but for those that wait on purpose (`wait`,
/// `watch`): a change is answered after its commit, which takes milliseconds when all is well.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// Connects, checks who serves the socket ([`Socket::connect`]: nothing is sent to a
    /// socket someone else may have planted), and shakes hands, within [`CONNECT_TIMEOUT`]. The
    /// errors say which socket was tried and what to do.
    pub async fn connect(socket: &Socket) -> anyhow::Result<Self> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_now(socket))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::Error::new(crate::socket::Unreachable(format!(
                    "chimed at {} did not answer within {}s; it may be stuck or overloaded: see its log (`journalctl -u chimed`)",
                    socket.path.display(),
                    CONNECT_TIMEOUT.as_secs()
                ))))
            })
    }

    async fn connect_now(socket: &Socket) -> anyhow::Result<Self> {
        let stream = socket.connect().await?;
        let socket = &socket.path;
        let mut framed = Framed::new(stream, frame_codec(MAX_REPLY_FRAME));
        let hello = codec::encode(&Hello::new(concat!("chimectl ", env!("CARGO_PKG_VERSION"))))?;
        // A chimed that refuses the connection (too many) says so at once and closes it, maybe
        // before the hello is written: its refusal is still there to read.
        let sent = framed.send(Bytes::from(hello)).await;
        let frame = framed
            .next()
            .await
            .with_context(|| {
                format!(
                    "chimed at {} closed the connection during the handshake",
                    socket.display()
                )
            })?
            .context("reading the handshake");
        let frame = match (frame, sent) {
            (Ok(frame), _) => frame,
            (Err(_), Err(err)) => return Err(err).context("sending the handshake"),
            (Err(err), Ok(())) => return Err(err),
        };
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
        Ok(Self {
            framed,
            next_id: 1,
            socket: socket.clone(),
        })
    }

    /// Sends one request and waits for its reply, within [`REPLY_TIMEOUT`] unless it is a request
    /// that waits on purpose (`wait`, `watch`). A refusal is an error of type [`Refused`].
    pub async fn call(&mut self, request: Request) -> anyhow::Result<Response> {
        if matches!(request, Request::Wait(_) | Request::Watch(_)) {
            return self.call_now(request).await;
        }
        let socket = self.socket.clone();
        tokio::time::timeout(REPLY_TIMEOUT, self.call_now(request))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "chimed at {} did not answer within {}s; it may be stuck or overloaded: see its log (`journalctl -u chimed`); the request may still be carried out",
                    socket.display(),
                    REPLY_TIMEOUT.as_secs()
                ))
            })
    }

    async fn call_now(&mut self, request: Request) -> anyhow::Result<Response> {
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
