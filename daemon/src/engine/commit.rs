//! One batch, from messages to effects (steps 3 and 4 of the engine's module docs): the work is
//! taken out of the messages, applied in one write transaction with the facts the engine holds,
//! committed once, and only then acted on: processes spawned and signalled, limits set, output
//! deleted, requests answered, events published. A batch whose commit fails is refused, and its
//! runner events are kept to be retried.

use super::batch::{self, Applied, Facts, Work};
use super::inbox::shutting_down;
use super::publish::Records;
use super::{Engine, Message, ReplySlot};
use crate::job::now_ms;
use crate::machine::Event;
use crate::runner::SpawnOrder;
use crate::store::StoreError;
use chime_proto::{ErrorCode, ErrorReply};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Engine {
    /// Applies one batch: commit, then act.
    pub(super) fn apply(&mut self, batch: Vec<Message>) {
        let (work, replies) = self.admit(batch);
        let now = now_ms();
        self.notice_stall(now);
        let env = self.facts();
        let fire = !self.shutting_down;
        let retry: Vec<Work> = work
            .iter()
            .filter(|w| matches!(w, Work::Runner { .. }))
            .cloned()
            .collect();
        let started = Instant::now();
        let result = if self.fence_now() {
            self.store.write_fencing(|w, gone| {
                let mut work = work;
                work.extend(super::fleet::lost_work(w, gone)?);
                batch::apply(w, &env, work, now, fire)
            })
        } else {
            self.store.write(|w| batch::apply(w, &env, work, now, fire))
        };
        let elapsed = started.elapsed();
        match result {
            Ok(applied) => {
                self.count_commit(elapsed, &applied);
                self.act(applied, replies);
            }
            Err(err) => self.refuse(err, replies, retry, env),
        }
    }

    /// Takes the work out of a batch's messages, in order, with each one's reply slot. Runs'
    /// ends free their places in the runner. During shutdown, a run that ends without success
    /// was ended by us (`interrupted`), and users' changes are refused.
    fn admit(&mut self, batch: Vec<Message>) -> (Vec<Work>, Vec<Option<ReplySlot>>) {
        let mut work = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for message in batch {
            let Message::Work { work: item, reply } = message else {
                continue;
            };
            if let Work::Runner {
                event:
                    Event::Exited { run, .. }
                    | Event::Finished { run, .. }
                    | Event::SpawnFailed { run, .. }
                    | Event::Unstarted { run },
                ..
            } = &item
            {
                self.runner.finished(*run);
            }
            let item = match item {
                // During shutdown a run that ends without success was ended by us. What the
                // runner saw of it (its times, its usage) is kept.
                Work::Runner {
                    job,
                    event: Event::Exited { run, outcome },
                } if self.shutting_down && !outcome.is_success() => Work::Runner {
                    job,
                    event: Event::Interrupted { run },
                },
                Work::Runner {
                    job,
                    event:
                        Event::Finished {
                            run,
                            outcome,
                            pid,
                            started_ms,
                            ended_ms,
                            usage,
                        },
                } if self.shutting_down && !outcome.is_success() => Work::Runner {
                    job,
                    event: Event::Finished {
                        run,
                        outcome: chime_proto::Outcome::Interrupted,
                        pid,
                        started_ms,
                        ended_ms,
                        usage,
                    },
                },
                Work::Runner { .. } => item,
                _ if self.shutting_down => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(shutting_down()));
                    }
                    continue;
                }
                item => item,
            };
            work.push(item);
            replies.push(reply);
        }
        (work, replies)
    }

    /// What the batch is given to know: the daemon's settings and the runner's runs in progress.
    /// The releases owed (after a start, or left over by the last batch) are handed over; a
    /// batch that fails to commit gives them back ([`Engine::refuse`]).
    fn facts(&mut self) -> Facts {
        Facts {
            database: self.database.clone(),
            on_time_since: self.on_time_since,
            event_retention: self.config.event_retention,
            local_tz: self.config.local_tz.clone(),
            max_running: self.config.max_running,
            running: self.runner.running_by_queue(),
            running_by_owner: self.runner.running_by_owner(),
            limits: self.config.limits.get(),
            host: self.config.host.clone(),
            quick: self.runner.quick_queues(),
            admin_uid: self.config.admin_uid,
            release_all: std::mem::take(&mut self.release_all),
            continue_release: std::mem::take(&mut self.continue_release),
        }
    }

    /// Counts a commit for `status` and metrics.
    fn count_commit(&self, elapsed: Duration, applied: &Applied) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .changes
            .fetch_add(applied.changes as u64, Ordering::Relaxed);
        self.stats
            .last_commit_us
            .store(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.stats
            .last_batch
            .store(applied.changes as u64, Ordering::Relaxed);
        self.metrics.commit(elapsed, applied.changes);
    }

    /// A batch whose commit failed: its requests are refused with an `internal` error, its
    /// runner events (`retry`) are kept for the next batch, the releases it was handed are given
    /// back, and the engine waits a moment before trying again.
    fn refuse(
        &mut self,
        err: StoreError,
        replies: Vec<Option<ReplySlot>>,
        retry: Vec<Work>,
        env: Facts,
    ) {
        if matches!(err, StoreError::Fenced(_)) {
            self.fenced(&err);
        }
        let message = if err.is_io() {
            // The store said what and where (once, in its log); redb refuses every
            // commit after an I/O error until the database is reopened.
            if let Err(reopen) = self.store.reopen() {
                tracing::debug!(error = %reopen, "the database could not be reopened yet");
            }
            err.to_string()
        } else {
            tracing::error!(error = %err, "committing a batch failed; requests in it were refused, runner events will be retried");
            format!("chimed could not store the change: {err}")
        };
        for reply in replies.into_iter().flatten() {
            let _ = reply.send(Err(ErrorReply::new(ErrorCode::Internal, message.clone())));
        }
        self.pending = retry;
        self.release_all = env.release_all;
        self.continue_release = env.continue_release;
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Carries out a committed batch: spawns, signals, replies, events.
    fn act(&mut self, mut applied: Applied, replies: Vec<Option<ReplySlot>>) {
        let mut opener = None;
        for order in applied.spawns.iter_mut().filter(|o| o.journal) {
            let opener = opener.get_or_insert_with(crate::runner::journal::Opener::new);
            order.logged = opener.gate();
        }
        let records = Records {
            audits: std::mem::take(&mut applied.audit),
            events: {
                let first_own = applied.events.first().map(|e| e.seq);
                self.relay_others(applied.event_head, first_own);
                self.publish(std::mem::take(&mut applied.events))
            },
            started: std::mem::take(&mut applied.started),
            opener,
        };
        self.next_wake = applied.next_wake;
        self.kick = applied.more_due || !applied.continue_release.is_empty();
        self.continue_release = applied.continue_release;
        for order in &applied.spawns {
            self.spawn_run(order);
        }
        for run in applied.terminations {
            self.runner.terminate(run);
        }
        for (run, signal) in applied.signals {
            self.runner.signal(run, signal);
        }
        for (queue, parallel) in &applied.limits {
            self.runner.set_limit(queue, *parallel);
        }
        for which in &applied.unstarts {
            self.runner.unstart(which);
        }
        if let Some(janitor) = &self.janitor {
            for deleted in applied.deleted_runs {
                let _ = janitor.send(deleted);
            }
        }
        self.answer(replies, applied.replies, applied.waits, records);
        self.end_waits(applied.settled, applied.removed);
        if let Ok(mut running) = self.stats.running.lock() {
            *running = self.runner.live_by_queue();
        }
    }

    fn spawn_run(&mut self, order: &SpawnOrder) {
        self.runner.start(order);
    }
}
