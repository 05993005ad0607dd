//! How work reaches the engine: the [`Message`]s of its inbox, the [`EngineHandle`] that
//! connections, reloads and the runner's supervisors send with (a request waits on its
//! [`ReplySlot`]), and the receiving side ([`Inbox`]) the engine thread owns.

use super::batch::Work;
use crate::runner::{Mailbox, Report};
use chime_proto::{ErrorCode, ErrorReply, Response};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// A reply slot for a user's request.
pub type ReplySlot = oneshot::Sender<Result<Response, ErrorReply>>;

/// A message in the engine's inbox.
#[derive(Debug)]
pub enum Message {
    Work {
        work: Work,
        reply: Option<ReplySlot>,
    },
    /// Stop: end running jobs and return.
    Shutdown,
    /// Test only (`chimed --test-wedge`): the engine stops working without ending, as a bug
    /// that hangs it would, so that the watchdog can be seen to restart chimed.
    Wedge,
    /// The runner's [`Mailbox`] holds as many reports as the engine asked to be rung for.
    Doorbell,
}

impl From<Report> for Work {
    fn from(Report { job, event }: Report) -> Self {
        Work::Runner { job, event }
    }
}

impl Message {
    pub(super) fn work(work: Work) -> Self {
        Self::Work { work, reply: None }
    }
}

/// The sending side of the engine's inbox. Cheap to clone.
///
/// The inbox is unbounded, but what can be in it is bounded: each connection has at most
/// [`crate::connection::MAX_IN_FLIGHT`] requests outstanding, connections are limited, and each
/// running process sends one exit.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inbox: mpsc::Sender<Message>,
    mailbox: Arc<Mailbox>,
}

impl EngineHandle {
    /// Sends a change to the engine and waits until it is committed and answered.
    pub async fn request(&self, work: Work) -> Result<Response, ErrorReply> {
        let (reply, answer) = oneshot::channel();
        let message = Message::Work {
            work,
            reply: Some(reply),
        };
        if self.inbox.send(message).is_err() {
            return Err(shutting_down());
        }
        answer.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    /// Where the runner's supervisors report.
    pub fn mailbox(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

    /// Asks the engine to stop (see the engine's module docs); its thread ends when it has.
    pub fn shutdown(&self) {
        let _ = self.inbox.send(Message::Shutdown);
    }

    /// Hangs the engine (test only; see [`Message::Wedge`]).
    pub fn wedge(&self) {
        let _ = self.inbox.send(Message::Wedge);
    }
}

pub(super) fn shutting_down() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::ShuttingDown,
        "chimed is shutting down and takes no more changes; retry when it is back",
    )
}

/// The engine's receiving side: its inbox and the runner's mailbox.
#[derive(Debug)]
pub struct Inbox {
    pub(super) receiver: mpsc::Receiver<Message>,
    pub(super) mailbox: Arc<Mailbox>,
}

/// Creates the engine's inbox and mailbox: the handle for connections and supervisors, and the
/// receiving side for [`Engine::new`](super::Engine::new).
pub fn channel() -> (EngineHandle, Inbox) {
    let (inbox, receiver) = mpsc::channel();
    let bell = inbox.clone();
    let mailbox = Arc::new(Mailbox::new(Box::new(move || {
        bell.send(Message::Doorbell).is_ok()
    })));
    (
        EngineHandle {
            inbox,
            mailbox: Arc::clone(&mailbox),
        },
        Inbox { receiver, mailbox },
    )
}
