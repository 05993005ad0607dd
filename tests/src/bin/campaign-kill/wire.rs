//! A protocol client that expects the daemon to die under it: every call says whether its
//! request was answered, refused, or left in doubt by a broken connection.

use bytes::Bytes;
use chime_proto::codec::{decode, encode, frame_codec};
use chime_proto::{
    ErrorReply, EventRecord, Handshake, Hello, JobDetail, JobRef, JobSummary, ListQuery,
    MAX_REPLY_FRAME, ReplyFrame, Request, RequestFrame, Response, ServerMessage, WatchFrame,
    WatchItem, WatchQuery, WatchStart,
};
use futures::{SinkExt, StreamExt};
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A live daemon answers every request well within this; one that does not is hung.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call has no answer.
#[derive(Debug)]
pub enum CallError {
    /// The connection failed or closed (the daemon was killed): a request that was written may
    /// or may not have been applied.
    Broken(String),
    /// The daemon kept the connection open and did not answer within [`REPLY_TIMEOUT`].
    Hung(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broken(why) => write!(f, "connection broken: {why}"),
            Self::Hung(what) => write!(f, "no answer within {REPLY_TIMEOUT:?} to {what}"),
        }
    }
}

/// What the daemon said to one request.
pub type Answer = Result<Response, ErrorReply>;

/// One connection after the handshake.
#[derive(Debug)]
pub struct Client {
    conn: Framed<UnixStream, LengthDelimitedCodec>,
    next_id: u64,
}

fn broken(err: impl std::fmt::Display) -> CallError {
    CallError::Broken(err.to_string())
}

impl Client {
    pub async fn connect(socket: &Path) -> Result<Self, CallError> {
        let stream = UnixStream::connect(socket).await.map_err(broken)?;
        let mut conn = Framed::new(stream, frame_codec(MAX_REPLY_FRAME));
        let hello = encode(&Hello::new("chime-campaign-kill")).map_err(broken)?;
        conn.send(Bytes::from(hello)).await.map_err(broken)?;
        let frame = tokio::time::timeout(REPLY_TIMEOUT, conn.next())
            .await
            .map_err(|_| CallError::Hung("the handshake".into()))?
            .ok_or_else(|| broken("closed during the handshake"))?
            .map_err(broken)?;
        let handshake: Handshake = decode(&frame).map_err(broken)?;
        handshake.map_err(|refused| broken(format!("handshake refused: {refused:?}")))?;
        Ok(Self { conn, next_id: 1 })
    }

    /// Sends `request` and waits for its answer.
    pub async fn call(&mut self, request: Request) -> Result<Answer, CallError> {
        let mut answers = self.call_many(vec![request]).await?;
        Ok(answers.pop().expect("one answer per request"))
    }

    /// Sends `requests` pipelined (at most 256 in flight, as the daemon reads) and returns
    /// their answers in order.
    pub async fn call_many(&mut self, requests: Vec<Request>) -> Result<Vec<Answer>, CallError> {
        let mut answers = Vec::with_capacity(requests.len());
        for window in requests.chunks(256) {
            let first = self.next_id;
            for request in window {
                let frame = encode(&RequestFrame {
                    id: self.next_id,
                    request: request.clone(),
                })
                .map_err(broken)?;
                self.next_id += 1;
                self.conn.feed(Bytes::from(frame)).await.map_err(broken)?;
            }
            SinkExt::<Bytes>::flush(&mut self.conn)
                .await
                .map_err(broken)?;
            let mut got: Vec<Option<Answer>> = vec![None; window.len()];
            let what: String = format!("{:?}", window[0]).chars().take(80).collect();
            for _ in window {
                let ReplyFrame { id, result } = match self.next_message(what.clone()).await? {
                    ServerMessage::Reply(reply) => reply,
                    ServerMessage::Watch(_) => return Err(broken("a watch frame, not a reply")),
                };
                let slot = id
                    .checked_sub(first)
                    .and_then(|i| got.get_mut(i as usize))
                    .ok_or_else(|| broken(format!("a reply to request {id}, never sent")))?;
                *slot = Some(result);
            }
            answers.extend(got.into_iter().map(|a| a.expect("every id answered once")));
        }
        Ok(answers)
    }

    async fn next_message(&mut self, what: String) -> Result<ServerMessage, CallError> {
        let frame = tokio::time::timeout(REPLY_TIMEOUT, self.conn.next())
            .await
            .map_err(|_| CallError::Hung(what))?
            .ok_or_else(|| broken("closed by the daemon"))?
            .map_err(broken)?;
        decode(&frame).map_err(broken)
    }

    /// Every job, page after page.
    pub async fn list_all(&mut self) -> Result<Vec<JobSummary>, CallError> {
        let mut jobs = Vec::new();
        let mut after = None;
        loop {
            let query = ListQuery {
                state: None,
                queue: None,
                name_prefix: None,
                after,
                limit: chime_proto::limits::LIST_LIMIT_MAX,
            };
            match self.call(Request::List(query)).await? {
                Ok(Response::Jobs(page)) => {
                    jobs.extend(page.jobs);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(jobs),
                    }
                }
                other => return Err(broken(format!("ls answered {other:?}"))),
            }
        }
    }

    /// `show` of each job, pipelined; `None` for a job that is not there.
    pub async fn show_many(
        &mut self,
        jobs: &[u64],
    ) -> Result<Vec<Option<Box<JobDetail>>>, CallError> {
        let requests = jobs
            .iter()
            .map(|id| Request::Show(JobRef::Id(chime_proto::JobId(*id))))
            .collect();
        let answers = self.call_many(requests).await?;
        answers
            .into_iter()
            .map(|answer| match answer {
                Ok(Response::Job(detail)) => Ok(Some(detail)),
                Err(refused) if refused.code == chime_proto::ErrorCode::NotFound => Ok(None),
                other => Err(broken(format!("show answered {other:?}"))),
            })
            .collect()
    }
}

/// Every event committed after `since`, up to the newest one when the watch began.
pub async fn events_since(
    socket: &Path,
    since: u64,
) -> Result<(WatchStart, Vec<EventRecord>), CallError> {
    let mut client = Client::connect(socket).await?;
    let query = WatchQuery {
        since: Some(since),
        job: None,
    };
    let start = match client.call(Request::Watch(query)).await? {
        Ok(Response::Watching(start)) => start,
        other => return Err(broken(format!("watch answered {other:?}"))),
    };
    let mut events = Vec::new();
    let mut last = since;
    while last < start.head {
        match client.next_message("the event stream".into()).await? {
            ServerMessage::Watch(WatchFrame {
                item: WatchItem::Events(batch),
                ..
            }) => {
                if let Some(event) = batch.last() {
                    last = event.seq;
                }
                events.extend(batch);
            }
            // The rest follows from the log; nothing is lost unless `lost` says so.
            ServerMessage::Watch(WatchFrame {
                item: WatchItem::Lagged { lost, .. },
                ..
            }) => {
                if lost > 0 {
                    return Err(broken(format!("{lost} events were pruned before read")));
                }
            }
            ServerMessage::Reply(reply) => {
                return Err(broken(format!("a reply in a watch stream: {reply:?}")));
            }
        }
    }
    events.retain(|e| e.seq <= start.head);
    Ok((start, events))
}
