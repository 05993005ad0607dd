//! Pauses and queues: pausing and resuming a job, a queue or everything (timed or not), queue
//! limits, the slots a queue and a user have free, and the release of waiting jobs when slots
//! free or a pause ends.

use super::core::{Batch, FleetRunning, refused};
use super::*;
use crate::job::{Ms, PauseInfo, QueueLimits};
use crate::machine::Event;
use crate::store::{PauseKey, QueueRecord, StoreError};
use chime_proto::{
    ErrorCode, ErrorReply, EventKind, PauseTarget, Paused, QueueInfo, ResourceLimits, Response,
    Resumed,
};
use std::collections::HashMap;

impl Batch<'_, '_> {
    pub(super) fn queue(&mut self, name: &str) -> Result<QueueRecord, StoreError> {
        if let Some(record) = self.queues.get(name) {
            return Ok(record.clone());
        }
        let record = self
            .w
            .queues()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .unwrap_or_default();
        self.queues.insert(name.to_owned(), record.clone());
        Ok(record)
    }

    /// Runs `owner` may still open: `running_per_user` less those open and planned, and no more
    /// than users in all may open (all but the administrators' reserve of `max_running`: see
    /// [`crate::limits::Limits::users_running`]); unbounded for the administrators. Unlike a
    /// queue's limit it admits no runs ahead, even for a quick queue: a user's job shown
    /// `running` is running, and the ones waiting for their slots are `queued`.
    pub(super) fn owner_slots(&self, owner: u32) -> usize {
        let limits = &self.env.limits;
        let Some(cap) = limits.running_cap(owner) else {
            return usize::MAX;
        };
        let count = |map: &HashMap<u32, usize>, who: u32| map.get(&who).copied().unwrap_or(0);
        let users = |map: &HashMap<u32, usize>| {
            map.iter()
                .filter(|(who, _)| !limits.is_exempt(**who))
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        let mine = count(&self.env.running_by_owner, owner) + count(&self.planned_by_owner, owner);
        let all_users = users(&self.env.running_by_owner) + users(&self.planned_by_owner);
        let users_max = limits.users_running(self.env.max_running);
        cap.saturating_sub(mine)
            .min(users_max.saturating_sub(all_users))
    }

    /// Runs that may start now in `queue` (its limit and `max_running`), and whether the queue
    /// (or everything) is paused.
    ///
    /// `env.running` counts the runner's live runs at the start of the batch; the engine forgets a
    /// run before the batch that records its end, so ended runs are not in it.
    pub(super) fn queue_slots(&mut self, queue: &str) -> Result<(usize, bool), StoreError> {
        let record = self.queue(queue)?;
        let paused = record.pause.is_some() || self.pause_all.is_some();
        if !self.fire {
            return Ok((0, paused));
        }
        // In a fleet, a queue's limit counts every host's runs.
        let elsewhere = match self.fleet_running()? {
            Some(fleet) => fleet.others.get(queue).copied().unwrap_or(0),
            None => 0,
        };
        let in_queue = self.env.running.get(queue).copied().unwrap_or(0)
            + self.planned.get(queue).copied().unwrap_or(0)
            + elsewhere;
        let total = self.env.running.values().sum::<usize>() + self.planned.values().sum::<usize>();
        // Runs opened ahead wait in this host's runner, which holds them to the limit on this
        // host only: in a fleet, a limited queue opens none ahead, so that what is open is
        // what runs, and the hosts' records add up to the queue's limit.
        let quick = self.env.quick.contains(queue)
            && (self.env.host.is_none() || record.parallel.is_none());
        let queue_free = record.parallel.map_or(usize::MAX, |p| {
            admission(p as usize, quick).saturating_sub(in_queue)
        });
        let daemon_free = admission(self.env.max_running, quick).saturating_sub(total);
        Ok((queue_free.min(daemon_free), paused))
    }

    /// In a fleet: the runs in progress per queue across its hosts (read once per batch).
    fn fleet_running(&mut self) -> Result<Option<&FleetRunning>, StoreError> {
        let Some(me) = self.env.host.as_deref() else {
            return Ok(None);
        };
        if self.fleet_running.is_none() {
            let mut fleet = FleetRunning::default();
            for (host, queue, n) in self.w.fleet_running()? {
                if host == me {
                    fleet.recorded.insert(queue, n);
                } else {
                    *fleet.others.entry(queue).or_default() += n as usize;
                }
            }
            self.fleet_running = Some(fleet);
        }
        Ok(self.fleet_running.as_ref())
    }

    /// In a fleet: records this host's runs in progress per queue (its runner's, and those this
    /// batch opens), for the other hosts' queue limits; only what changed is written.
    pub(super) fn record_fleet_running(&mut self) -> Result<(), StoreError> {
        let Some(me) = self.env.host.clone() else {
            return Ok(());
        };
        let recorded = match self.fleet_running()? {
            Some(fleet) => fleet.recorded.clone(),
            None => return Ok(()),
        };
        let mut now: HashMap<String, u64> = HashMap::new();
        for (queue, n) in self.env.running.iter().chain(self.planned.iter()) {
            *now.entry(queue.clone()).or_default() += *n as u64;
        }
        for (queue, n) in &now {
            if recorded.get(queue) != Some(n) {
                self.w.set_fleet_running(&me, queue, *n)?;
            }
        }
        for queue in recorded.keys() {
            if !now.contains_key(queue) {
                self.w.set_fleet_running(&me, queue, 0)?;
            }
        }
        Ok(())
    }

    /// Runs that may start now in `queue` for `owner` (see [`Batch::queue_slots`] and
    /// [`Batch::owner_slots`]), and whether the queue (or everything) is paused.
    pub(super) fn slots(&mut self, queue: &str, owner: u32) -> Result<(usize, bool), StoreError> {
        let (free, paused) = self.queue_slots(queue)?;
        Ok((free.min(self.owner_slots(owner)), paused))
    }

    pub(super) fn is_admin(&self, uid: u32) -> bool {
        uid == 0 || uid == self.env.admin_uid
    }

    pub(super) fn pause(
        &mut self,
        uid: u32,
        target: PauseTarget,
        until_ms: Option<Ms>,
        for_ms: Option<u64>,
        reason: Option<String>,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let until = match (until_ms, for_ms) {
            (Some(until), _) => Some(until),
            (None, Some(ms)) => Some(
                self.now
                    .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
                    .min(MAX_DUE_MS),
            ),
            (None, None) => None,
        };
        if until.is_some_and(|u| u <= self.now) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "the pause would end in the past; give a later --until or a positive --for",
            )));
        }
        let pause = PauseInfo {
            since_ms: self.now,
            until_ms: until,
            reason,
            by_uid: uid,
        };
        let key = match &target {
            PauseTarget::All | PauseTarget::Queue(_) if !self.is_admin(uid) => {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    format!("only root may pause {target}; you may pause your own jobs"),
                )));
            }
            PauseTarget::All => {
                if let Some(old) = self.pause_all.take().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::All)?;
                }
                self.w.set_pause_all(Some(&pause))?;
                self.pause_all = Some(pause.clone());
                self.out.unstarts.push(crate::runner::Unstart::All);
                PauseKey::All
            }
            PauseTarget::Queue(name) => {
                let mut record = self.queue(name)?;
                if let Some(old) = record.pause.take().and_then(|p| p.until_ms) {
                    self.w
                        .remove_pause_timer(old, &PauseKey::Queue(name.clone()))?;
                }
                record.pause = Some(pause.clone());
                self.w.put_queue(name, &record)?;
                self.queues.insert(name.clone(), record);
                self.out
                    .unstarts
                    .push(crate::runner::Unstart::Queue(name.clone()));
                PauseKey::Queue(name.clone())
            }
            PauseTarget::Job(job) => {
                let found = match self.find(uid, job)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                if let Some(old) = found.pause.as_ref().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::Job(found.id))?;
                }
                if let Err(refusal) = self.transition(&found, Event::Pause(pause.clone()))? {
                    return Ok(Err(refused(refusal)));
                }
                self.out
                    .unstarts
                    .push(crate::runner::Unstart::Job(found.id));
                PauseKey::Job(found.id)
            }
        };
        if let Some(until) = until {
            self.w.add_pause_timer(until, &key)?;
        }
        if !matches!(target, PauseTarget::Job(_)) {
            let kind = EventKind::Paused {
                target: target.clone(),
                until_ms: until,
                reason: pause.reason.clone(),
            };
            self.emit(None, kind)?;
        }
        self.out.changes += 1;
        Ok(Ok(Response::Paused(Paused {
            target,
            pause: pause.clone(),
        })))
    }

    pub(super) fn resume(
        &mut self,
        uid: u32,
        target: PauseTarget,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let released = match &target {
            PauseTarget::All | PauseTarget::Queue(_) if !self.is_admin(uid) => {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    format!("only root may resume {target}"),
                )));
            }
            PauseTarget::All => {
                let Some(old) = self.pause_all.take() else {
                    return Ok(Err(ErrorReply::new(
                        ErrorCode::InvalidState,
                        "nothing is paused as a whole; `chimectl status` shows what is",
                    )));
                };
                self.end_all(old)?
            }
            PauseTarget::Queue(name) => {
                let record = self.queue(name)?;
                let Some(old) = record.pause.clone() else {
                    return Ok(Err(ErrorReply::new(
                        ErrorCode::InvalidState,
                        format!("queue {name:?} is not paused"),
                    )));
                };
                self.end_queue(name, old)?
            }
            PauseTarget::Job(job) => {
                let found = match self.find(uid, job)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                if let Some(old) = found.pause.as_ref().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::Job(found.id))?;
                }
                match self.transition(&found, Event::Resume)? {
                    Ok(_) => 1,
                    Err(refusal) => return Ok(Err(refused(refusal))),
                }
            }
        };
        self.out.changes += 1;
        Ok(Ok(Response::Resumed(Resumed { target, released })))
    }

    /// Ends the pause of everything; returns how many jobs wait to be released.
    pub(super) fn end_all(&mut self, old: PauseInfo) -> Result<u64, StoreError> {
        if let Some(until) = old.until_ms {
            self.w.remove_pause_timer(until, &PauseKey::All)?;
        }
        self.w.set_pause_all(None)?;
        self.pause_all = None;
        self.resumed_all = true;
        self.emit(
            None,
            EventKind::Resumed {
                target: PauseTarget::All,
            },
        )?;
        Ok(self.w.waiting_queues()?.iter().map(|(_, n)| n).sum())
    }

    pub(super) fn end_queue(&mut self, name: &str, old: PauseInfo) -> Result<u64, StoreError> {
        if let Some(until) = old.until_ms {
            self.w
                .remove_pause_timer(until, &PauseKey::Queue(name.into()))?;
        }
        let mut record = self.queue(name)?;
        record.pause = None;
        self.w.put_queue(name, &record)?;
        self.queues.insert(name.into(), record);
        self.resumed.insert(name.into());
        self.emit(
            None,
            EventKind::Resumed {
                target: PauseTarget::Queue(name.into()),
            },
        )?;
        Ok(self
            .w
            .waiting_queues()?
            .into_iter()
            .find(|(q, _)| q == name)
            .map_or(0, |(_, n)| n))
    }

    /// A timed pause reached its end.
    pub(super) fn end_pause(&mut self, until: Ms, key: PauseKey) -> Result<(), StoreError> {
        // Only the pause that set this timer ends; a newer pause has its own.
        match &key {
            PauseKey::All => match self.pause_all.clone() {
                Some(p) if p.until_ms == Some(until) => {
                    tracing::info!("timed pause of everything ended");
                    self.end_all(p)?;
                }
                _ => self.w.remove_pause_timer(until, &key)?,
            },
            PauseKey::Queue(name) => match self.queue(name)?.pause {
                Some(p) if p.until_ms == Some(until) => {
                    tracing::info!(queue = %name, "timed pause of the queue ended");
                    self.end_queue(name, p)?;
                }
                _ => self.w.remove_pause_timer(until, &key)?,
            },
            PauseKey::Job(id) => {
                self.w.remove_pause_timer(until, &key)?;
                if let Some(job) = self.load(*id)?
                    && job.pause.as_ref().and_then(|p| p.until_ms) == Some(until)
                {
                    tracing::info!(job_id = id.0, "timed pause of the job ended");
                    if let Err(refusal) = self.transition(&job, Event::Resume)? {
                        tracing::warn!(job_id = id.0, %refusal, "could not resume the job");
                    }
                }
            }
        }
        self.out.changes += 1;
        Ok(())
    }

    /// `queue set`: what is given changes, the rest of the queue's limits stay.
    pub(super) fn set_queue(
        &mut self,
        uid: u32,
        name: String,
        parallel: Option<Option<u32>>,
        clear_limits: bool,
        limits: ResourceLimits,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        if !self.is_admin(uid) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::PermissionDenied,
                "only root may change queue limits",
            )));
        }
        let current = self.queue(&name)?;
        let kept = if clear_limits {
            ResourceLimits::default()
        } else {
            current.limits
        };
        let wanted = QueueLimits {
            parallel: parallel.unwrap_or(current.parallel),
            limits: limits.or(&kept),
        };
        let record = self.set_limit(name.clone(), wanted)?;
        self.out.changes += 1;
        Ok(Ok(Response::Queues(vec![QueueInfo {
            running: self.env.running.get(&name).copied().unwrap_or(0) as u32,
            waiting: 0,
            pause: record.pause.clone(),
            parallel: record.parallel,
            limits: record.limits.clone(),
            name,
        }])))
    }

    /// Sets a queue's limits and records them. Runs opened from now on take its resource
    /// limits; runs in progress keep theirs.
    pub(super) fn set_limit(
        &mut self,
        name: String,
        wanted: QueueLimits,
    ) -> Result<QueueRecord, StoreError> {
        let mut record = self.queue(&name)?;
        let QueueLimits { parallel, limits } = wanted;
        record.parallel = parallel;
        record.limits = limits.clone();
        self.w.put_queue(&name, &record)?;
        self.out.limits.push((name.clone(), parallel));
        self.emit(
            None,
            EventKind::QueueLimit {
                queue: name.clone(),
                parallel,
                limits,
            },
        )?;
        self.queues.insert(name, record.clone());
        // A higher limit may free slots.
        self.slots_freed = true;
        Ok(record)
    }

    /// Releases waiting jobs: every waiting job of resumed queues (held occurrences meet their
    /// catch-up policy), and as many as there are free slots elsewhere.
    pub(super) fn release(&mut self) -> Result<(), StoreError> {
        let waiting = self.w.waiting_queues()?;
        for (queue, _) in waiting {
            let (free, paused) = self.queue_slots(&queue)?;
            if paused {
                continue;
            }
            let everything = self.resumed_all || self.resumed.contains(&queue);
            let limit = if everything {
                RELEASE_LIMIT
            } else if self.slots_freed || self.env.release_all {
                free.min(RELEASE_LIMIT)
            } else {
                0
            };
            if limit == 0 {
                continue;
            }
            // Users at their running limit are passed over (their jobs wait on), so that the
            // next user's waiting jobs are not stuck behind them.
            let capped: std::collections::HashSet<u32> = self
                .env
                .running_by_owner
                .keys()
                .chain(self.planned_by_owner.keys())
                .copied()
                .filter(|owner| self.owner_slots(*owner) == 0)
                .collect();
            let skip = |owner: u32| !everything && capped.contains(&owner);
            let ids = self.w.waiting_in(&queue, limit, skip)?;
            if everything && ids.len() == RELEASE_LIMIT {
                self.out.continue_release.insert(queue.clone());
            }
            for (owner, id) in ids {
                if !everything && self.slots(&queue, owner)?.0 == 0 {
                    if self.queue_slots(&queue)?.0 == 0 {
                        break;
                    }
                    continue;
                }
                if let Some(job) = self.load(id)?
                    && let Err(refusal) = self.transition(&job, Event::Release)?
                {
                    tracing::debug!(job_id = id.0, %refusal, "release did not apply");
                }
            }
        }
        Ok(())
    }
}
