//! Changes of jobs: submissions (new and replacing), skip, wait, kill, removal and deletion, and
//! the turning of a submission into the state machine's spec and its first occurrence.

use super::core::{Batch, refused};
use super::*;
use crate::access::check_owner;
use crate::job::{Exec, Job, Ms, State};
use crate::machine::{Event, Refusal, Spec};
use crate::store::{Found, StoreError};
use chime_proto::{
    Added, ErrorCode, ErrorReply, EventKind, JobRef, JobSpec, Killed, Removed, Response, RunId,
    Skipped,
};

impl Batch<'_, '_> {
    pub(super) fn submit(
        &mut self,
        uid: u32,
        user: String,
        spec: JobSpec,
        exec: Exec,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let (machine_spec, first_due) =
            match crate::spec::resolve(&spec, exec, self.now, &self.env.local_tz) {
                Ok(resolved) => resolved,
                Err(refusal) => return Ok(Err(refusal.into())),
            };
        if let Some(name) = &spec.name
            && let Some(existing) = self.w.job_id_by_name(name, uid)?
        {
            if !spec.replace {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::Conflict,
                    format!(
                        "the name {name:?} is taken by job {existing}; choose another name, or add --replace to swap its spec"
                    ),
                )));
            }
            let job = self
                .w
                .job(existing)?
                .expect("the name index points at a job");
            if let Err(refusal) = check_owner(uid, &job) {
                return Ok(Err(refusal));
            }
            return self.replace_with(&job, machine_spec);
        }
        let limits = &self.env.limits;
        if !limits.is_exempt(uid) && self.w.owned_count(uid)? >= limits.jobs_per_user {
            return Ok(Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "you have {} jobs stored, the most a user may have ({}); remove finished ones with `chimectl rm`, or wait for their retention to end",
                    limits.jobs_per_user,
                    limits.said("jobs_per_user")
                ),
            )));
        }
        let job = self.new_job(uid, user, spec.name, machine_spec, first_due, None);
        let first_due = job.state.due_ms().unwrap_or(self.now);
        self.found = Some((job.id, job.owner, job.name.clone()));
        self.add(&job)?;
        Ok(Ok(Response::Added(Added {
            id: job.id,
            due_at_ms: first_due,
        })))
    }

    /// `chimectl edit`: replaces the spec of job `id` with `spec`, as [`Self::submit`] replaces a
    /// named one, unless the job's spec changed since the edit began (`revision`). A spec that
    /// is the job's already is left alone: nothing is reset (its count, its owed runs).
    pub(super) fn edit(
        &mut self,
        uid: u32,
        id: JobId,
        revision: u64,
        spec: JobSpec,
        exec: Exec,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let job = match self.find(uid, &JobRef::Id(id))? {
            Ok(job) => job,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if Spec::of(&job).revision() != revision {
            return Ok(Err(ErrorReply::new(
                ErrorCode::Conflict,
                format!(
                    "job {id} changed while you edited it (it was replaced or edited meanwhile); run `chimectl edit {id}` again"
                ),
            )));
        }
        let (machine_spec, _) =
            match crate::spec::resolve(&spec, exec, self.now, &self.env.local_tz) {
                Ok(resolved) => resolved,
                Err(refusal) => return Ok(Err(refusal.into())),
            };
        if machine_spec == Spec::of(&job) && job.source.is_none() {
            return Ok(Ok(Response::Added(Added {
                id,
                due_at_ms: job.state.due_ms().unwrap_or(self.now),
            })));
        }
        self.replace_with(&job, machine_spec)
    }

    /// Replaces `job`'s spec for a user (`add --replace`, `edit`), unless a job file declares it.
    fn replace_with(
        &mut self,
        job: &Job,
        spec: Spec,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        if let Some(source) = job.source_path() {
            return Ok(Err(crate::access::declared(job, source)));
        }
        Ok(match self.replace(job, spec)? {
            Ok(after) => Ok(Response::Added(Added {
                id: after.id,
                due_at_ms: after.state.due_ms().unwrap_or(self.now),
            })),
            Err(refusal) => Err(refused(refusal)),
        })
    }

    /// A new job of `owner`, not yet stored, first due at `first_due` (from
    /// [`crate::spec::resolve`]).
    pub(super) fn new_job(
        &mut self,
        owner: u32,
        owner_name: String,
        name: Option<String>,
        spec: Spec,
        first_due: Ms,
        source: Option<crate::job::Source>,
    ) -> Job {
        let id = self.w.allocate_job_id();
        Job {
            name,
            source,
            ..spec.into_job(id, (owner, owner_name), self.now, first_due)
        }
    }

    /// Stores a new job and records that it was added.
    pub(super) fn add(&mut self, job: &Job) -> Result<(), StoreError> {
        self.w.put_job(None, job)?;
        self.out.changes += 1;
        let kind = EventKind::Added {
            queue: job.queue.clone(),
            next_due_ms: job.state.due_ms(),
            timer: job.command.is_timer(),
            source: job.source_path().unwrap_or("chimectl").into(),
        };
        self.emit(Some(job), kind)
    }

    /// Swaps a job's spec, keeping its id and history, and records that it was updated.
    pub(super) fn replace(
        &mut self,
        job: &Job,
        spec: Spec,
    ) -> Result<Result<Job, Refusal>, StoreError> {
        let after = match self.transition(job, Event::Replace(Box::new(spec)))? {
            Ok(after) => after,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let kind = EventKind::Updated {
            next_due_ms: after.state.due_ms(),
        };
        self.emit(Some(&after), kind)?;
        Ok(Ok(after))
    }

    /// Registers a wait, or answers it at once when there is nothing to wait for.
    pub(super) fn wait(
        &mut self,
        index: usize,
        uid: u32,
        job: &JobRef,
        since_ms: Option<Ms>,
    ) -> Result<Option<Result<Response, ErrorReply>>, StoreError> {
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        let last = self.w.last_run(found.id)?;
        // For `add --wait`: the run it waits for may have settled before the wait arrived.
        let settled_already = since_ms.is_some_and(|since| {
            last.as_ref().is_some_and(|run| {
                run.started_ms >= since
                    && run.outcome.is_some()
                    && found.state.runs().is_empty()
                    && !found.state.owes_again(run)
            })
        });
        if found.state.is_final() || settled_already {
            return Ok(Some(Ok(Response::Waited(chime_proto::Waited {
                id: found.id,
                state: found.kind(),
                run: last.map(crate::wire::run_info),
            }))));
        }
        self.out.waits.push(WaitFor {
            index,
            job: found.id,
            since_ms,
        });
        Ok(None)
    }

    pub(super) fn kill(
        &mut self,
        uid: u32,
        job: &JobRef,
        signal: i32,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // The runner signals the live ones (their pid may not be recorded yet); in a fleet,
        // each on the host that runs it.
        let runs: Vec<(RunId, Option<crate::job::HostId>)> = found
            .state
            .runs()
            .iter()
            .map(|r| (r.run, r.host.clone()))
            .collect();
        if runs.is_empty() {
            return Ok(Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "job {} is not running; there is nothing to signal",
                    found.id
                ),
            )));
        }
        for (run, host) in &runs {
            self.stop(host.as_deref(), *run, Some(signal))?;
        }
        Ok(Ok(Response::Killed(Killed {
            id: found.id,
            signalled: runs.len() as u32,
        })))
    }

    pub(super) fn remove(
        &mut self,
        uid: u32,
        job: &JobRef,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        if let Found::Damaged {
            id, theirs: true, ..
        } = self.w.find(uid, job)?
        {
            let (owner, runs) = self.w.remove_damaged(id)?;
            tracing::warn!(job_id = id.0, by_uid = uid, "a damaged job was removed");
            let n = runs.len();
            if let Some(owner) = owner {
                self.out
                    .deleted_runs
                    .extend(runs.into_iter().map(|run| (id, run, owner)));
            }
            self.out.removed.push(id);
            self.out.changes += 1;
            return Ok(Ok(Response::Removed(Removed { id, runs: n as u64 })));
        }
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !found.state.runs().is_empty() {
            return Ok(Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "job {} is running; cancel it (or wait for it) before removing it",
                    found.id
                ),
            )));
        }
        let runs = self.delete(&found, "removed")?;
        Ok(Ok(Response::Removed(Removed {
            id: found.id,
            runs: runs as u64,
        })))
    }

    /// Deletes a job and its runs (their output goes after the commit), and records why:
    /// `removed`, `expired` or `undeclared`.
    pub(super) fn delete(&mut self, job: &Job, reason: &str) -> Result<usize, StoreError> {
        self.emit(
            Some(job),
            EventKind::Removed {
                reason: reason.into(),
            },
        )?;
        let runs = self.w.delete_job(job)?;
        let n = runs.len();
        self.out
            .deleted_runs
            .extend(runs.into_iter().map(|run| (job.id, run, job.owner)));
        self.out.removed.push(job.id);
        self.out.changes += 1;
        Ok(n)
    }

    /// Skips the job's next occurrence.
    pub(super) fn skip(
        &mut self,
        uid: u32,
        job: &JobRef,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let before = self.find(uid, job)?;
        Ok(match before {
            Err(refusal) => Err(refusal),
            Ok(before) => {
                let skipped = match &before.state {
                    State::Active { next, .. } => match next {
                        crate::job::Next::Scheduled(d) | crate::job::Next::Held(d) => Some(*d),
                        crate::job::Next::None => None,
                    },
                    _ => None,
                };
                match self.transition(&before, Event::Skip)? {
                    Err(refusal) => Err(refused(refusal)),
                    Ok(after) => Ok(Response::Skipped(Skipped {
                        id: before.id,
                        skipped_due_ms: skipped.unwrap_or_default(),
                        next_due_ms: after.state.due_ms(),
                    })),
                }
            }
        })
    }
}
