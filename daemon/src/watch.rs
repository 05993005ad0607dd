//! `watch`: following the event log, live, without ever slowing the engine.
//!
//! The engine appends events in the transaction of each change and, after the commit, sends them
//! on a broadcast channel of [`CHANNEL_CAPACITY`] events shared by every watcher. Sending never
//! waits. A watcher that reads too slowly (its client does not keep up) falls behind the channel
//! and is told so by the channel ("lagged"); it then tells its client and reads what it missed
//! from the log in the database, and goes back to the channel. So a slow client costs the engine
//! nothing, costs the daemon a bounded amount of memory, and still misses nothing that is
//! retained.
//!
//! Order without gaps: a watch subscribes to the channel *before* it reads the log, and events
//! reach the channel only after their commit. So every event is in the log the watch reads, or
//! in the channel, or both; sequence numbers remove the duplicates.
//!
//! A watch takes over its connection: after the [`chime_proto::WatchStart`] reply the daemon only
//! sends [`ServerMessage::Watch`] frames, and anything the client sends is ignored, until the
//! client closes the connection or the daemon stops.

use crate::access::read_owned_job;
use crate::context::Context;
use bytes::Bytes;
use chime_proto::codec;
use chime_proto::{
    ErrorReply, EventRecord, JobId, JobRef, ReplyFrame, Response, ServerMessage, WatchFrame,
    WatchItem, WatchQuery, WatchStart,
};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Events the channel holds for the slowest watcher before it lags.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Most events in one frame.
const FRAME_EVENTS: usize = 256;

/// Most events read from the log at once.
const PAGE: usize = 1024;

type Reader = tokio_util::codec::FramedRead<
    tokio::net::unix::OwnedReadHalf,
    tokio_util::codec::LengthDelimitedCodec,
>;
type Writer = tokio_util::codec::FramedWrite<
    tokio::net::unix::OwnedWriteHalf,
    tokio_util::codec::LengthDelimitedCodec,
>;

/// Who may see an event: root and chimed's own user see all; others their jobs' events and those
/// of queues and of everything.
fn visible(event: &EventRecord, uid: u32, admin: u32, job: Option<JobId>) -> bool {
    if job.is_some_and(|j| event.job != Some(j)) {
        return false;
    }
    uid == 0 || uid == admin || event.owner.is_none_or(|owner| owner == uid)
}

struct Watch<'a> {
    context: &'a Arc<Context>,
    writer: &'a mut Writer,
    /// Committed events as the engine publishes them.
    live: broadcast::Receiver<Arc<EventRecord>>,
    /// The protocol version of the connection, which frames are encoded for.
    version: u32,
    id: u64,
    uid: u32,
    job: Option<JobId>,
    /// The last sequence number handled (sent or filtered out).
    last: u64,
}

impl Watch<'_> {
    async fn send(&mut self, item: WatchItem) -> Result<(), ()> {
        let message = ServerMessage::Watch(WatchFrame { id: self.id, item });
        let payload = codec::encode_server_message(self.version, &message).map_err(|_| ())?;
        self.writer.send(Bytes::from(payload)).await.map_err(|_| ())
    }

    async fn send_events(&mut self, events: Vec<EventRecord>) -> Result<(), ()> {
        let admin = self.context.info.uid;
        let visible: Vec<EventRecord> = events
            .into_iter()
            .filter(|e| visible(e, self.uid, admin, self.job))
            .collect();
        for chunk in visible.chunks(FRAME_EVENTS) {
            self.send(WatchItem::Events(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Sends everything in the log after `self.last`, page by page, until the newest event.
    async fn catch_up(&mut self) -> Result<(), ()> {
        loop {
            let (last, job) = (self.last, self.job);
            let ((_, head), (events, examined)) = self
                .read(move |reader| {
                    Ok((
                        reader.event_bounds()?,
                        reader.events_after(last, PAGE, job)?,
                    ))
                })
                .await?;
            self.last = self.last.max(examined);
            self.send_events(events).await?;
            if self.last >= head {
                return Ok(());
            }
        }
    }

    /// Runs a read of the database on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Reader) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ()> {
        let context = Arc::clone(self.context);
        match tokio::task::spawn_blocking(move || f(&context.store.read()?)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "watch: cannot read the event log");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    /// Sends events as they are committed, until the client goes away or chimed stops. Errors: a
    /// frame could not be sent, or the log read after falling behind.
    async fn follow(&mut self, reader: &mut Reader) -> Result<(), ()> {
        loop {
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(event) => self.forward(event).await?,
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(uid = self.uid, skipped, "watcher fell behind; catching up from the event log");
                        self.lagged().await?;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                frame = reader.next() => match frame {
                    None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Sends `first`, just received, in one frame with the events already waiting behind it,
    /// leaving out those sent already.
    async fn forward(&mut self, first: Arc<EventRecord>) -> Result<(), ()> {
        let mut batch = Vec::new();
        if first.seq > self.last {
            batch.push((*first).clone());
        }
        while batch.len() < FRAME_EVENTS {
            match self.live.try_recv() {
                Ok(event) if event.seq > self.last => batch.push((*event).clone()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if let Some(newest) = batch.last() {
            self.last = newest.seq;
        }
        self.send_events(batch).await
    }

    /// The client fell behind the channel: tell it, then send what it missed from the log.
    async fn lagged(&mut self) -> Result<(), ()> {
        let (oldest, _) = self.read(|reader| reader.event_bounds()).await?;
        let resume_from = self.last + 1;
        let lost = oldest.saturating_sub(resume_from);
        self.last = self.last.max(oldest.saturating_sub(1));
        self.send(WatchItem::Lagged { resume_from, lost }).await?;
        self.catch_up().await
    }
}

/// Answers a watch request, then streams events until the client goes away or chimed stops;
/// every frame is encoded for protocol `version`.
pub async fn serve(
    reader: &mut Reader,
    writer: &mut Writer,
    context: &Arc<Context>,
    version: u32,
    uid: u32,
    id: u64,
    query: WatchQuery,
) {
    // Subscribe first: see the module docs.
    let live = context.events.subscribe();
    let start = {
        let context = Arc::clone(context);
        let job = query.job.clone();
        tokio::task::spawn_blocking(move || bounds_and_job(&context, uid, job)).await
    };
    let ((oldest, head), job) = match start {
        Ok(Ok(found)) => found,
        Ok(Err(refusal)) => {
            let _ = reply(writer, version, id, Err(refusal)).await;
            return;
        }
        Err(_) => return,
    };
    let (from, pruned) = start_after(query.since, oldest, head);
    let started = WatchStart {
        oldest,
        head,
        from: from + 1,
        pruned,
        job,
    };
    if reply(writer, version, id, Ok(Response::Watching(started)))
        .await
        .is_err()
    {
        return;
    }
    let mut watch = Watch {
        context,
        writer,
        live,
        version,
        id,
        uid,
        job,
        last: from,
    };
    // Either way the watch ends: the client went away or cannot be written to, or chimed stops.
    if watch.catch_up().await.is_ok() {
        let _ = watch.follow(reader).await;
    }
}

/// The event log's bounds (oldest and newest sequence numbers) and the id of the job the watch
/// follows, if any. Blocks (reads the database). Errors: the refusal to answer with (no such
/// job, or not one `uid` may see; the database cannot be read).
fn bounds_and_job(
    context: &Context,
    uid: u32,
    job: Option<JobRef>,
) -> Result<((u64, u64), Option<JobId>), ErrorReply> {
    let reader = context.store.read()?;
    let job = match job {
        None => None,
        Some(job) => {
            let found = read_owned_job(&reader, uid, &job, context.store.path())?;
            Some(found.id)
        }
    };
    Ok((reader.event_bounds()?, job))
}

/// Where a watch starts, given the client's `since` and the log's bounds: the sequence number
/// after which it sends events (the head when the client gave no `since`), and whether events it
/// asked for are gone from the log (pruned), in which case it starts with the oldest one left.
fn start_after(since: Option<u64>, oldest: u64, head: u64) -> (u64, bool) {
    let from = since.map_or(head, |since| since.min(head));
    let pruned = since.is_some() && oldest > 0 && from + 1 < oldest;
    if pruned {
        (oldest - 1, true)
    } else {
        (from, false)
    }
}

async fn reply(
    writer: &mut Writer,
    version: u32,
    id: u64,
    result: Result<Response, ErrorReply>,
) -> Result<(), ()> {
    let message = ServerMessage::Reply(ReplyFrame { id, result });
    let payload = codec::encode_server_message(version, &message).map_err(|_| ())?;
    writer.send(Bytes::from(payload)).await.map_err(|_| ())
}
