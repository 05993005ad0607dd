//! The checks after each restart, and the final ones.
//!
//! Sources, read in an order that makes each check exact:
//! 1. the execution log (what ran), up to what is complete;
//! 2. `ls` of every job, `status`, `queue ls`, and the event log since the last check;
//! 3. `show` of the jobs that became final, of the jobs with executions not yet matched to a
//!    record, and of cancelled jobs whose runs are not known yet;
//! 4. the execution log again: a job final in (3) wrote all its lines before its last record
//!    was committed, so the lines it wrote are all read by then.
//!
//! An execution read in (1) was started after its run's record was committed (chimed commits a
//! run before it spawns it), so the `show` in (3) must have that record.

use crate::job_command::Line;
use crate::ledger::{Ack, Invariant, Ledger, PauseOp, Settled, Tracked, Violations};
use crate::load::{QUEUES, lock};
use crate::wire::{CallError, Client, events_since};
use chime_proto::{
    EventKind, EventRecord, JobDetail, JobState, JobSummary, Outcome, PauseTarget, QueueInfo,
    Request, Response, RunInfo,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One execution of a run's process, from its lines.
#[derive(Debug, Clone)]
pub struct Execution {
    pub job: u64,
    pub attempt: u32,
    pub pid: u32,
    pub start_us: i64,
    /// When it ended and its exit code; `None` if it was killed (SIGKILL) first.
    pub end: Option<(i64, i32)>,
}

/// The execution log, read as it grows.
#[derive(Debug)]
pub struct ExecLog {
    path: PathBuf,
    offset: u64,
    /// By run id.
    pub runs: HashMap<u64, Execution>,
    pub by_job: HashMap<u64, Vec<u64>>,
    /// Runs whose record was not seen yet.
    pub unverified: BTreeSet<u64>,
}

impl ExecLog {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            runs: HashMap::new(),
            by_job: HashMap::new(),
            unverified: BTreeSet::new(),
        }
    }

    /// Reads the complete lines appended since the last read.
    pub fn read_new(&mut self, v: &mut Violations) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return; // nothing ran yet
        };
        let mut bytes = Vec::new();
        file.seek(std::io::SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .expect("read the execution log");
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        for text in String::from_utf8_lossy(&bytes[..complete]).lines() {
            match Line::parse(text) {
                Some(Line::Start {
                    job,
                    run,
                    attempt,
                    pid,
                    at_us,
                }) => {
                    if let Some(first) = self.runs.get(&run) {
                        v.add(
                            Invariant::DoubleRun,
                            format!(
                                "run {run} started twice: job {} pid {}, then job {job} pid {pid}",
                                first.job, first.pid
                            ),
                        );
                        continue;
                    }
                    self.runs.insert(
                        run,
                        Execution {
                            job,
                            attempt,
                            pid,
                            start_us: at_us,
                            end: None,
                        },
                    );
                    self.by_job.entry(job).or_default().push(run);
                    self.unverified.insert(run);
                }
                Some(Line::End {
                    job,
                    run,
                    at_us,
                    code,
                }) => match self.runs.get_mut(&run) {
                    Some(e) if e.end.is_none() && e.job == job => e.end = Some((at_us, code)),
                    _ => v.add(
                        Invariant::RecordMismatch,
                        format!("execution log: an end without its start: {text}"),
                    ),
                },
                None => v.add(
                    Invariant::RecordMismatch,
                    format!("execution log: a line that does not parse: {text:?}"),
                ),
            }
        }
    }
}

/// Figures the checks gather besides violations.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs seen final and checked in full.
    pub settled: u64,
    /// Runs recorded `lost`.
    pub lost_runs: u64,
    /// Occurrences run again because their run was lost before its start was recorded.
    pub reruns_after_lost: u64,
    /// ... of which the lost run's process had in fact run to its end (at-least-once).
    pub completed_then_rerun: u64,
    /// Jobs no acknowledged submission created (their submission was in doubt).
    pub phantoms: u64,
    /// Started events read.
    pub started_events: u64,
    pub events: u64,
    pub executions_verified: u64,
}

/// What the checks remember between rounds.
#[derive(Debug)]
pub struct Checker {
    pub exec: ExecLog,
    events_seq: u64,
    paused_jobs: HashSet<u64>,
    paused_queues: HashSet<String>,
    all_paused: bool,
    /// When each kill's orphans were reaped (wall clock, us): every run of that incarnation
    /// had ended by then.
    pub kills_us: Vec<i64>,
    /// The queue of every job seen.
    job_queue: HashMap<u64, String>,
    pub stats: Stats,
    /// The jobs `ls` showed last time.
    pub jobs_last: usize,
}

/// Whether a check is the last one (nothing runs any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    AfterRestart,
    Final,
}

impl Checker {
    pub fn new(exec_log: PathBuf) -> Self {
        Self {
            exec: ExecLog::new(exec_log),
            events_seq: 0,
            paused_jobs: HashSet::new(),
            paused_queues: HashSet::new(),
            all_paused: false,
            kills_us: Vec::new(),
            job_queue: HashMap::new(),
            stats: Stats::default(),
            jobs_last: 0,
        }
    }

    /// One round of checks against a running chimed. `Err` when chimed stopped answering.
    pub async fn check(
        &mut self,
        socket: &Path,
        ledger: &Mutex<Ledger>,
        round: Round,
    ) -> Result<(), CallError> {
        self.exec.read_new(&mut lock(ledger).violations);
        let before: Vec<u64> = self.exec.unverified.iter().copied().collect();
        let mut conn = Client::connect(socket).await?;
        let jobs = conn.list_all().await?;
        self.jobs_last = jobs.len();
        let status = match conn.call(Request::Status).await? {
            Ok(Response::Status(status)) => status,
            other => return Err(CallError::Broken(format!("status answered {other:?}"))),
        };
        let queues = match conn.call(Request::Queues).await? {
            Ok(Response::Queues(queues)) => queues,
            other => return Err(CallError::Broken(format!("queue ls answered {other:?}"))),
        };
        let (_, events) = events_since(socket, self.events_seq).await?;
        let mut to_show = {
            let mut ledger = lock(ledger);
            self.events(&events, &mut ledger);
            self.jobs_table(&jobs, &status, &queues, &mut ledger, round)
        };
        for run in &before {
            to_show.insert(self.exec.runs[run].job);
        }
        let ids: Vec<u64> = to_show.into_iter().collect();
        let shown = conn.show_many(&ids).await?;
        let mut guard = lock(ledger);
        let ledger = &mut *guard;
        self.exec.read_new(&mut ledger.violations);
        let before: HashSet<u64> = before.into_iter().collect();
        for (id, detail) in ids.iter().zip(shown) {
            let Some(tracked) = ledger.jobs.get_mut(id) else {
                // Executions of a job nobody submitted and `ls` never showed.
                self.verify(*id, detail.as_deref(), &before, &mut ledger.violations);
                continue;
            };
            match detail {
                Some(detail) => {
                    self.job_queue.insert(*id, detail.summary.queue.clone());
                    if tracked.cancel == Ack::Acked && tracked.cancel_runs.is_none() {
                        tracked.cancel_runs = Some(run_ids(&detail));
                    }
                    if detail.summary.state.is_final() && tracked.settled.is_none() {
                        self.settle(*id, &detail, tracked, &mut ledger.violations);
                    }
                    self.verify(*id, Some(&detail), &before, &mut ledger.violations);
                }
                None => {
                    // Gone: only a removal explains it, and the removal's snapshot has the
                    // records (the job was final when it was taken).
                    let snapshot = match tracked.remove {
                        Ack::None => None,
                        _ => tracked.snapshot.take(),
                    };
                    self.verify(*id, snapshot.as_deref(), &before, &mut ledger.violations);
                    tracked.snapshot = snapshot;
                }
            }
        }
        if round == Round::Final {
            self.final_round(&jobs, &status, ledger);
        }
        Ok(())
    }

    /// Follows pauses through the event log: no run may open while its job, its queue or
    /// everything is paused; none for a final job, none for a cancelled one.
    fn events(&mut self, events: &[EventRecord], ledger: &mut Ledger) {
        self.stats.events += events.len() as u64;
        for (i, e) in events.iter().enumerate() {
            self.events_seq = self.events_seq.max(e.seq);
            let job = e.job.map(|j| j.0);
            match &e.kind {
                EventKind::Paused { target, .. } => match target {
                    PauseTarget::All => self.all_paused = true,
                    PauseTarget::Queue(q) => {
                        self.paused_queues.insert(q.clone());
                    }
                    PauseTarget::Job(_) => {
                        self.paused_jobs.extend(job);
                    }
                },
                EventKind::Resumed { target } => match target {
                    PauseTarget::All => self.all_paused = false,
                    PauseTarget::Queue(q) => {
                        self.paused_queues.remove(q);
                    }
                    PauseTarget::Job(_) => {
                        if let Some(job) = job {
                            self.paused_jobs.remove(&job);
                        }
                    }
                },
                // A final job holds no pause; a removed one is gone.
                EventKind::State { to, .. } if to.is_final() => {
                    if let Some(job) = job {
                        self.paused_jobs.remove(&job);
                    }
                }
                EventKind::Removed { .. } => {
                    if let Some(job) = job {
                        self.paused_jobs.remove(&job);
                    }
                }
                EventKind::Started { run, queue, .. } => {
                    self.stats.started_events += 1;
                    let Some(job) = job else { continue };
                    let v = &mut ledger.violations;
                    // A resume's own transition starts what it released, and its events list
                    // the start before the resume.
                    let job_paused = self.paused_jobs.contains(&job)
                        && !resumed_in_same_transition(&events[i + 1..], e, job);
                    if self.all_paused || self.paused_queues.contains(queue) || job_paused {
                        v.add(
                            Invariant::Pause,
                            format!(
                                "run {run} of job {job} opened (event {}) while paused: all {}, queue {queue} {}, job {job_paused}",
                                e.seq,
                                self.all_paused,
                                self.paused_queues.contains(queue)
                            ),
                        );
                    }
                    let Some(tracked) = ledger.jobs.get(&job) else {
                        continue;
                    };
                    if let Some(settled) = &tracked.settled
                        && !settled.runs.contains(&run.0)
                    {
                        v.add(
                            Invariant::FinalChanged,
                            format!(
                                "run {run} of job {job} opened (event {}) after the job was seen {:?}",
                                e.seq, settled.state
                            ),
                        );
                    }
                    if let Some(head) = tracked.cancel_head
                        && e.seq > head
                    {
                        v.add(
                            Invariant::Cancel,
                            format!(
                                "run {run} of job {job} opened (event {}) after its cancel was acknowledged",
                                e.seq
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Every tracked job against `ls`: acknowledged jobs present and unchanged, acknowledged
    /// cancels, pauses, resumes and removals in force, final jobs unchanged; jobs nobody
    /// submitted adopted (and counted against the submissions in doubt); status counts and queue
    /// settings. Returns the jobs to `show`.
    fn jobs_table(
        &mut self,
        jobs: &[JobSummary],
        status: &chime_proto::DaemonStatus,
        queues: &[QueueInfo],
        ledger: &mut Ledger,
        round: Round,
    ) -> BTreeSet<u64> {
        let by_id: HashMap<u64, &JobSummary> = jobs.iter().map(|j| (j.id.0, j)).collect();
        let mut to_show = BTreeSet::new();
        let in_doubt = ledger.in_doubt_submits();
        let mut phantoms = 0;
        for row in jobs {
            self.job_queue
                .entry(row.id.0)
                .or_insert_with(|| row.queue.clone());
            if let std::collections::btree_map::Entry::Vacant(entry) = ledger.jobs.entry(row.id.0) {
                entry.insert(Tracked::default());
                phantoms += 1;
            }
        }
        self.stats.phantoms += phantoms;
        let v = &mut ledger.violations;
        if self.stats.phantoms > in_doubt {
            v.add(
                Invariant::Phantom,
                format!(
                    "{} jobs no acknowledged submission created, and only {in_doubt} submissions were in doubt",
                    self.stats.phantoms
                ),
            );
        }
        for (id, tracked) in ledger.jobs.iter_mut() {
            let id = *id;
            let row = by_id.get(&id).copied();
            match (row, tracked.remove) {
                (None, Ack::Acked) => continue,
                (None, Ack::InDoubt) => {
                    tracked.remove = Ack::Acked;
                    continue;
                }
                (Some(_), Ack::Acked) => {
                    v.add(
                        Invariant::AckedLost,
                        format!("job {id} is back after its removal was acknowledged"),
                    );
                    tracked.remove = Ack::None;
                }
                (Some(_), Ack::InDoubt) => tracked.remove = Ack::None,
                (None, Ack::None) => {
                    let what = if tracked.spec.is_some() {
                        "acknowledged"
                    } else {
                        "seen before"
                    };
                    v.add(
                        Invariant::AckedLost,
                        format!("job {id} ({what}) is missing"),
                    );
                    // Once.
                    tracked.remove = Ack::Acked;
                    continue;
                }
                (Some(_), Ack::None) => {}
            }
            let row = row.expect("present");
            check_row(id, row, tracked, v);
            if row.state.is_final() && tracked.settled.is_none() {
                to_show.insert(id);
            }
            if tracked.cancel == Ack::Acked && tracked.cancel_runs.is_none() {
                to_show.insert(id);
            }
            if tracked.cancel == Ack::Acked && tracked.cancel_head.is_none() {
                tracked.cancel_head = Some(status.events_head);
            }
        }
        // Removed jobs never seen final are checked from the snapshot taken before removal.
        for (id, tracked) in ledger.jobs.iter_mut() {
            if tracked.remove == Ack::Acked
                && tracked.settled.is_none()
                && let Some(snapshot) = tracked.snapshot.take()
            {
                self.job_queue
                    .entry(*id)
                    .or_insert_with(|| snapshot.summary.queue.clone());
                self.settle(*id, &snapshot, tracked, &mut ledger.violations);
                tracked.snapshot = Some(snapshot);
            }
        }
        let v = &mut ledger.violations;
        let total: u64 = status.counts.iter().map(|(_, n)| n).sum();
        if total != jobs.len() as u64 {
            v.add(
                Invariant::StatusVsLs,
                format!("status counts {total} jobs, ls lists {}", jobs.len()),
            );
        }
        if round == Round::Final {
            let mut listed: BTreeMap<JobState, u64> = BTreeMap::new();
            for row in jobs {
                *listed.entry(row.state).or_default() += 1;
            }
            for (state, n) in &status.counts {
                let in_ls = listed.get(state).copied().unwrap_or(0);
                if *n != in_ls {
                    v.add(
                        Invariant::StatusVsLs,
                        format!("status counts {n} {state} jobs, ls lists {in_ls}"),
                    );
                }
            }
        }
        for (name, parallel) in QUEUES {
            let set = queues
                .iter()
                .find(|q| q.name == name)
                .and_then(|q| q.parallel);
            if set != Some(parallel) {
                v.add(
                    Invariant::QueueLimit,
                    format!("queue {name}: limit {set:?}, acknowledged {parallel}"),
                );
            }
        }
        for (queue, (op, ack)) in &ledger.queue_pauses {
            let paused = status.paused_queues.iter().any(|(q, _)| q == queue);
            let lost = match (op, ack) {
                (PauseOp::Pause { timed: false }, Ack::Acked) => !paused,
                (PauseOp::Resume, Ack::Acked) => paused,
                _ => false,
            };
            if lost {
                v.add(
                    Invariant::Pause,
                    format!("queue {queue}: acknowledged {op:?} lost (paused: {paused})"),
                );
            }
        }
        to_show
    }

    /// A final job in full: its runs against its policy, its executions against its records.
    fn settle(&mut self, id: u64, detail: &JobDetail, tracked: &mut Tracked, v: &mut Violations) {
        self.stats.settled += 1;
        let d = detail;
        let exec = &detail.exec;
        let state = d.summary.state;
        tracked.settled = Some(Settled {
            state,
            runs_started: d.summary.runs_started,
            runs: d.runs.iter().map(|r| r.run.0).collect(),
        });
        if let Some(spec) = &tracked.spec
            && (spec.retries != exec.retries)
        {
            v.add(
                Invariant::AckedLost,
                format!(
                    "job {id}: retries {} stored, {} submitted",
                    exec.retries, spec.retries
                ),
            );
        }
        for run in &d.runs {
            if run.outcome.is_none() || run.finished_at_ms.is_none() {
                v.add(
                    Invariant::RecordMismatch,
                    format!("job {id} is {state} with run {} open", run.run),
                );
            }
            if run.outcome == Some(Outcome::Lost) {
                self.stats.lost_runs += 1;
            }
        }
        if d.summary.runs_started as usize != d.runs.len() {
            v.add(
                Invariant::RecordMismatch,
                format!(
                    "job {id}: runs_started {} but {} runs recorded",
                    d.summary.runs_started,
                    d.runs.len()
                ),
            );
        }
        if tracked.cancel == Ack::Acked {
            if state != JobState::Cancelled {
                v.add(
                    Invariant::Cancel,
                    format!("job {id}: cancel acknowledged, but the job ended {state}"),
                );
            }
            if let Some(allowed) = &tracked.cancel_runs {
                for run in d.runs.iter().filter(|r| !allowed.contains(&r.run.0)) {
                    v.add(
                        Invariant::Cancel,
                        format!(
                            "job {id}: run {} opened after its cancel was acknowledged",
                            run.run
                        ),
                    );
                }
            }
        }
        // Occurrences: each due time's attempts, in order.
        let mut occurrences: BTreeMap<i64, Vec<&RunInfo>> = BTreeMap::new();
        for run in &d.runs {
            occurrences.entry(run.due_at_ms).or_default().push(run);
        }
        let retried = |run: &RunInfo| {
            let outcome = run.outcome.as_ref().unwrap_or(&Outcome::Lost);
            run.attempt <= exec.retries && exec.retry_on.iter().any(|k| k.matches(outcome))
        };
        let unconfirmed = |run: &RunInfo| run.outcome == Some(Outcome::Lost) && run.pid.is_none();
        let success = |run: &RunInfo| run.outcome.as_ref().is_some_and(Outcome::is_success);
        for (due, runs) in &mut occurrences {
            runs.sort_by_key(|r| r.run);
            // Attempts count up from 1; a run lost before its start was recorded (no pid) used
            // up no attempt, so the run after it has the same number.
            let attempts: Vec<u32> = runs.iter().map(|r| r.attempt).collect();
            let expected = runs.iter().scan(None::<&RunInfo>, |prev, run| {
                let want = match prev {
                    None => 1,
                    Some(p) if unconfirmed(p) => p.attempt,
                    Some(p) => p.attempt + 1,
                };
                *prev = Some(*run);
                Some(want)
            });
            if attempts.iter().zip(expected).any(|(a, want)| *a != want) {
                v.add(
                    Invariant::RunPolicy,
                    format!("job {id}: occurrence due {due} has attempts {attempts:?}"),
                );
            }
            for pair in runs.windows(2) {
                let (prev, next) = (pair[0], pair[1]);
                if success(prev) {
                    v.add(
                        Invariant::DoubleRun,
                        format!(
                            "job {id}: occurrence due {due} ran again (run {}) after run {} succeeded",
                            next.run, prev.run
                        ),
                    );
                } else if unconfirmed(prev) {
                    self.stats.reruns_after_lost += 1;
                    let ran_to_end = self
                        .exec
                        .runs
                        .get(&prev.run.0)
                        .is_some_and(|e| e.end.is_some());
                    if ran_to_end {
                        self.stats.completed_then_rerun += 1;
                    }
                } else if !retried(prev) {
                    v.add(
                        Invariant::RunPolicy,
                        format!(
                            "job {id}: run {} retried run {} ({:?}, attempt {}) with retries {}",
                            next.run, prev.run, prev.outcome, prev.attempt, exec.retries
                        ),
                    );
                }
            }
            let last = runs.last().expect("an occurrence has runs");
            let owed = !success(last) && (unconfirmed(last) || retried(last));
            if owed && state != JobState::Cancelled {
                v.add(
                    Invariant::RunPolicy,
                    format!(
                        "job {id} is {state}, but run {} ({:?}, attempt {}) was owed a retry (retries {})",
                        last.run, last.outcome, last.attempt, exec.retries
                    ),
                );
            }
        }
        if let Some(spec) = &tracked.spec {
            let limit = if spec.recurring {
                spec.count.unwrap_or(u32::MAX) as usize
            } else {
                1
            };
            if occurrences.len() > limit {
                let invariant = if spec.recurring {
                    Invariant::RunPolicy
                } else {
                    Invariant::DoubleRun
                };
                v.add(
                    invariant,
                    format!(
                        "job {id} ran {} occurrences, at most {limit} allowed",
                        occurrences.len()
                    ),
                );
            }
        }
        // Records against executions.
        let records: HashMap<u64, &RunInfo> = d.runs.iter().map(|r| (r.run.0, r)).collect();
        for run in self.exec.by_job.get(&id).into_iter().flatten() {
            let e = &self.exec.runs[run];
            match records.get(run) {
                None => v.add(
                    Invariant::WithoutRecord,
                    format!(
                        "job {id} ({state}): run {run} executed (pid {}) and has no record",
                        e.pid
                    ),
                ),
                Some(r) => {
                    if r.attempt != e.attempt {
                        v.add(
                            Invariant::RecordMismatch,
                            format!(
                                "job {id}: run {run} executed as attempt {}, recorded as {}",
                                e.attempt, r.attempt
                            ),
                        );
                    }
                    if let Some(Outcome::Exited(code)) = r.outcome
                        && e.end.map(|(_, c)| c) != Some(code)
                    {
                        v.add(
                            Invariant::RecordMismatch,
                            format!(
                                "job {id}: run {run} recorded exited {code}, its execution ended {:?}",
                                e.end
                            ),
                        );
                    }
                }
            }
            if self.exec.unverified.remove(run) {
                self.stats.executions_verified += 1;
            }
        }
        for r in &d.runs {
            if let Some(Outcome::Exited(code)) = r.outcome
                && !self.exec.runs.contains_key(&r.run.0)
            {
                v.add(
                    Invariant::RecordMismatch,
                    format!(
                        "job {id}: run {} recorded exited {code} and never executed",
                        r.run
                    ),
                );
            }
        }
    }

    /// Matches the executions read before the `show` (`before`) of job `id` with its records.
    fn verify(
        &mut self,
        id: u64,
        detail: Option<&JobDetail>,
        before: &HashSet<u64>,
        v: &mut Violations,
    ) {
        let runs: Vec<u64> = self
            .exec
            .by_job
            .get(&id)
            .into_iter()
            .flatten()
            .copied()
            .filter(|r| before.contains(r) && self.exec.unverified.contains(r))
            .collect();
        for run in runs {
            let e = &self.exec.runs[&run];
            let record = detail.and_then(|d| d.runs.iter().find(|r| r.run.0 == run));
            match record {
                None => v.add(
                    Invariant::WithoutRecord,
                    format!(
                        "job {id}: run {run} executed (pid {}, attempt {}) and has no record{}",
                        e.pid,
                        e.attempt,
                        if detail.is_none() {
                            " (the job is gone)"
                        } else {
                            ""
                        }
                    ),
                ),
                Some(r) if r.attempt != e.attempt => v.add(
                    Invariant::RecordMismatch,
                    format!(
                        "job {id}: run {run} executed as attempt {}, recorded as {}",
                        e.attempt, r.attempt
                    ),
                ),
                Some(_) => {}
            }
            self.exec.unverified.remove(&run);
            self.stats.executions_verified += 1;
        }
    }

    /// Once nothing runs: every execution matched and ended, queue limits never exceeded.
    fn final_round(
        &mut self,
        jobs: &[JobSummary],
        status: &chime_proto::DaemonStatus,
        ledger: &mut Ledger,
    ) {
        let v = &mut ledger.violations;
        for row in jobs.iter().filter(|j| !j.state.is_final()) {
            v.add(
                Invariant::Liveness,
                format!("job {} is still {} at the end", row.id, row.state),
            );
        }
        if status.running != 0 {
            v.add(
                Invariant::Liveness,
                format!("{} runs still in progress at the end", status.running),
            );
        }
        for run in std::mem::take(&mut self.exec.unverified) {
            let e = &self.exec.runs[&run];
            v.add(
                Invariant::WithoutRecord,
                format!(
                    "job {}: run {run} executed (pid {}) and was never matched to a record",
                    e.job, e.pid
                ),
            );
        }
        self.queue_limits(v);
    }

    /// No queue ever ran more processes at once than its limit. A process's span is from its
    /// start line to its end line or, killed before it wrote one, to the reaping after the kill.
    fn queue_limits(&self, v: &mut Violations) {
        for (queue, limit) in QUEUES {
            let mut points: Vec<(i64, i32, u64)> = Vec::new();
            for (run, e) in &self.exec.runs {
                if self.job_queue.get(&e.job).map(String::as_str) != Some(queue) {
                    continue;
                }
                let end = e
                    .end
                    .map(|(at, _)| at)
                    .or_else(|| self.kills_us.iter().copied().find(|k| *k > e.start_us));
                let Some(end) = end else {
                    v.add(
                        Invariant::RecordMismatch,
                        format!("job {}: run {run} never ended", e.job),
                    );
                    continue;
                };
                points.push((e.start_us, 1, *run));
                points.push((end, -1, *run));
            }
            // At equal times an end comes first: the next process starts after the last ended.
            points.sort();
            let mut running: BTreeSet<u64> = BTreeSet::new();
            let mut worst = 0;
            for (at, delta, run) in points {
                if delta > 0 {
                    running.insert(run);
                } else {
                    running.remove(&run);
                }
                if running.len() > limit as usize && running.len() > worst {
                    worst = running.len();
                    v.add(
                        Invariant::QueueLimit,
                        format!(
                            "queue {queue} (limit {limit}) ran {} processes at once at {at} us: runs {running:?}",
                            running.len()
                        ),
                    );
                }
            }
        }
    }

    /// Jobs that have executions not yet matched, for the report.
    pub fn executions(&self) -> usize {
        self.exec.runs.len()
    }
}

/// The acknowledged changes of one job against its `ls` row.
fn check_row(id: u64, row: &JobSummary, tracked: &mut Tracked, v: &mut Violations) {
    if let Some(spec) = &tracked.spec {
        let same_command =
            matches!(&row.command, chime_proto::Command::Argv(argv) if *argv == spec.argv);
        if !same_command || row.queue != spec.queue {
            v.add(
                Invariant::AckedLost,
                format!(
                    "job {id} changed: {} in queue {}, submitted {:?} in {}",
                    row.command, row.queue, spec.argv, spec.queue
                ),
            );
        }
    }
    match tracked.cancel {
        Ack::Acked if row.state != JobState::Cancelled => v.add(
            Invariant::Cancel,
            format!(
                "job {id}: cancel acknowledged, but the job is {} after a restart",
                row.state
            ),
        ),
        // It happened, or it did not.
        Ack::InDoubt if row.state == JobState::Cancelled => tracked.cancel = Ack::Acked,
        Ack::InDoubt => tracked.cancel = Ack::None,
        _ => {}
    }
    if !row.state.is_final() {
        let lost = match tracked.pause {
            Some((PauseOp::Pause { timed: false }, Ack::Acked)) => row.pause.is_none(),
            Some((PauseOp::Resume, Ack::Acked)) => row.pause.is_some(),
            _ => false,
        };
        if lost {
            v.add(
                Invariant::Pause,
                format!(
                    "job {id}: acknowledged {:?} lost (pause now {:?})",
                    tracked.pause, row.pause
                ),
            );
        }
    }
    if let Some(settled) = &tracked.settled
        && (row.state != settled.state || row.runs_started != settled.runs_started)
    {
        v.add(
            Invariant::FinalChanged,
            format!(
                "job {id} was {} with {} runs, is now {} with {}",
                settled.state, settled.runs_started, row.state, row.runs_started
            ),
        );
    }
}

fn run_ids(detail: &JobDetail) -> BTreeSet<u64> {
    detail.runs.iter().map(|r| r.run.0).collect()
}

/// Whether the events that follow `started` in its transition (the same job, the same commit
/// time, consecutive sequence numbers) include the job's resume.
fn resumed_in_same_transition(after: &[EventRecord], started: &EventRecord, job: u64) -> bool {
    let mut seq = started.seq;
    for e in after {
        if e.seq != seq + 1 || e.job.map(|j| j.0) != Some(job) || e.at_ms != started.at_ms {
            return false;
        }
        if matches!(
            &e.kind,
            EventKind::Resumed {
                target: PauseTarget::Job(_)
            }
        ) {
            return true;
        }
        seq = e.seq;
    }
    false
}
