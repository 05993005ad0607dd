//! Answering users after a commit: each request's reply slot gets its reply, except a `wait`
//! that must wait: its slot is kept ([`Waiter`]) until a run of its job settles, or the job is
//! removed.
//!
//! The replies of a batch are handed to the [`Postman`], a task on the runtime, in one message:
//! filling a reply slot wakes the connection task that waits on it, and a wake from outside the
//! runtime costs a futex call to unpark a worker, once per request (a seventh of the engine's
//! time under 32 clients, measured). The engine pays one wake per batch; the postman, on a
//! worker, wakes the connections where that is cheap, and then writes the batch's log records
//! ([`Records`]), so that neither the engine nor the replies wait for the log.
//!
//! Log records therefore come out in commit order among themselves, but a record the engine
//! writes itself (a warning while applying the next batch) may come before the last batch's.
//! A run's process starts beside them, not after them; the output of an `--output journal`
//! run is held back until its batch's records are written (the batch's
//! [`crate::runner::journal::Opener`] travels with them), so the journal shows it between the
//! run's start and end records.

use super::batch::{Settled, WaitFor};
use super::publish::Records;
use super::{Engine, ReplySlot};
use crate::job::Ms;
use chime_proto::{ErrorCode, ErrorReply, JobId, Response};
use std::collections::HashMap;

/// Replies on their way to their slots, one message per batch.
type Letters = Vec<(ReplySlot, Result<Response, ErrorReply>)>;

/// Fills reply slots and writes log records on the runtime, for the engine thread
/// ([`Postman::start`]).
#[derive(Debug)]
pub(super) struct Postman(tokio::sync::mpsc::UnboundedSender<(Letters, Records)>);

/// Fills the slots, then writes the records.
fn post(letters: Letters, records: Records) {
    for (slot, reply) in letters {
        let _ = slot.send(reply);
    }
    records.write();
}

impl Postman {
    /// Starts the postman's task on `runtime`.
    pub(super) fn start(runtime: &tokio::runtime::Handle) -> Self {
        let (sender, mut mail) = tokio::sync::mpsc::unbounded_channel::<(Letters, Records)>();
        runtime.spawn(async move {
            while let Some((letters, records)) = mail.recv().await {
                post(letters, records);
            }
        });
        Self(sender)
    }

    /// Delivers `letters` and writes `records`: through the task, or here when it is gone (the
    /// runtime is stopping).
    fn deliver(&self, letters: Letters, records: Records) {
        if letters.is_empty() && records.audits.is_empty() && records.events.is_empty() {
            return;
        }
        if let Err(returned) = self.0.send((letters, records)) {
            let (letters, records) = returned.0;
            post(letters, records);
        }
    }
}

/// A `wait` that is waiting.
#[derive(Debug)]
pub(super) struct Waiter {
    since_ms: Option<Ms>,
    reply: ReplySlot,
}

impl Engine {
    /// Answers a committed batch's requests and writes its log `records`: `slots` and
    /// `replies` are in the batch's order; a request with a slot and no reply is a wait in
    /// `waits`, kept until a run settles.
    pub(super) fn answer(
        &mut self,
        slots: Vec<Option<ReplySlot>>,
        replies: Vec<Option<Result<Response, ErrorReply>>>,
        waits: Vec<WaitFor>,
        records: Records,
    ) {
        let mut deferred: HashMap<usize, WaitFor> =
            waits.into_iter().map(|w| (w.index, w)).collect();
        let mut letters = Vec::with_capacity(slots.len());
        for (index, (slot, reply)) in slots.into_iter().zip(replies).enumerate() {
            match (slot, reply) {
                (Some(slot), Some(reply)) => letters.push((slot, reply)),
                (Some(slot), None) => {
                    if let Some(wait) = deferred.remove(&index) {
                        self.waiters.entry(wait.job).or_default().push(Waiter {
                            since_ms: wait.since_ms,
                            reply: slot,
                        });
                    }
                }
                _ => {}
            }
        }
        // While stopping, here: the runtime may end before the postman's turn comes.
        match self.postman.as_ref().filter(|_| !self.shutting_down) {
            Some(postman) => postman.deliver(letters, records),
            None => post(letters, records),
        }
    }

    /// Ends the waits a committed batch settles: a wait is answered by a settled run of its job
    /// that started at or after its `since_ms` (any run, without one); a wait for a removed job
    /// is refused.
    pub(super) fn end_waits(&mut self, settled: Vec<Settled>, removed: Vec<JobId>) {
        for settled in settled {
            let Some(waiters) = self.waiters.get_mut(&settled.job) else {
                continue;
            };
            let (done, keep): (Vec<Waiter>, Vec<Waiter>) = waiters.drain(..).partition(|w| {
                w.since_ms
                    .is_none_or(|since| settled.run.started_ms >= since)
            });
            *waiters = keep;
            for waiter in done {
                let _ = waiter
                    .reply
                    .send(Ok(chime_proto::Response::Waited(chime_proto::Waited {
                        id: settled.job,
                        state: settled.state,
                        run: Some(crate::wire::run_info(settled.run.clone())),
                    })));
            }
        }
        for job in removed {
            for waiter in self.waiters.remove(&job).unwrap_or_default() {
                let _ = waiter.reply.send(Err(ErrorReply::new(
                    ErrorCode::NotFound,
                    format!("job {job} was removed while waiting for it"),
                )));
            }
        }
        self.waiters.retain(|_, w| !w.is_empty());
    }
}
