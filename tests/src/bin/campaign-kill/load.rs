//! The mixed load: clients that submit, cancel, pause, resume and remove jobs until chimed is
//! killed under them, and record in the ledger every answer they got.

use crate::job_command;
use crate::ledger::{Ack, Invariant, Ledger, PauseOp, Submitted};
use crate::wire::{CallError, Client};
use chime_proto::{
    Command, ErrorCode, ExecSpec, JobId, JobRef, JobSpec, OverlapPolicy, PauseRequest, PauseTarget,
    Request, Response, ScheduleSpec, SubmitJob,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queues with a limit, set once at the start: (name, most runs at once).
pub const QUEUES: [(&str, u32); 3] = [("q1", 1), ("q2", 2), ("q3", 3)];

/// A small, seedable generator (splitmix64): a campaign is repeated with its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// In `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// What every client needs to know.
#[derive(Debug)]
pub struct LoadEnv {
    pub socket: PathBuf,
    /// This binary: every job runs it (see [`job_command`]).
    pub exe: String,
    /// The execution log.
    pub log: String,
    /// The jobs' working directory.
    pub cwd: String,
}

/// A client's memory across kills.
#[derive(Debug)]
pub struct ClientState {
    pub index: usize,
    rng: Rng,
    /// Its most recent jobs (it changes only its own).
    own: Vec<u64>,
    /// Its jobs paused without a time limit, to resume.
    paused: Vec<u64>,
    /// Queues it paused without a time limit (client 0 only).
    paused_queues: Vec<String>,
}

/// Most jobs a client remembers to pick from.
const OWN_MAX: usize = 400;

impl ClientState {
    pub fn new(index: usize, seed: u64) -> Self {
        Self {
            index,
            rng: Rng::new(seed),
            own: Vec::new(),
            paused: Vec::new(),
            paused_queues: Vec::new(),
        }
    }
}

/// Runs one client until `stop` is set or its connection breaks (chimed was killed).
pub async fn client(
    mut state: ClientState,
    env: Arc<LoadEnv>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> ClientState {
    // After a failed connect, or once `stop` is set, a client sends nothing: the next chimed
    // is for the checks alone until the next cycle.
    let Ok(mut conn) = Client::connect(&env.socket).await else {
        return state;
    };
    while !stop.load(Ordering::Relaxed) {
        let mut session = Session {
            state: &mut state,
            conn: &mut conn,
            env: &env,
            ledger: &ledger,
        };
        match session.step().await {
            Ok(()) => {}
            Err(CallError::Broken(_)) => break,
            Err(hung @ CallError::Hung(_)) => {
                lock(&ledger)
                    .violations
                    .add(Invariant::Liveness, format!("a client: {hung}"));
                break;
            }
        }
        let think = state.rng.range(5, 40);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    state
}

pub fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One client's step: a request and what its answer means.
struct Session<'a> {
    state: &'a mut ClientState,
    conn: &'a mut Client,
    env: &'a LoadEnv,
    ledger: &'a Mutex<Ledger>,
}

/// A request's answer, or `Err` for a broken connection after the request was recorded as in
/// doubt.
type Outcome = Result<Option<Response>, CallError>;

impl Session<'_> {
    async fn step(&mut self) -> Result<(), CallError> {
        let roll = self.state.rng.below(100);
        match roll {
            0..70 => self.submit().await,
            70..78 => self.cancel().await,
            78..84 => self.pause().await,
            84..90 => self.resume().await,
            90..94 => self.remove().await,
            94..97 => self.show().await,
            _ if self.state.index == 0 => self.pause_queue().await,
            _ => self.submit().await,
        }
    }

    /// Sends `request`; records a refusal, or a broken connection as `request` in doubt.
    async fn ask(&mut self, name: &'static str, request: Request) -> Outcome {
        let sent = Instant::now();
        let answer = self.conn.call(request).await;
        let took = sent.elapsed().as_millis() as u64;
        let mut ledger = lock(self.ledger);
        ledger.slowest_reply_ms = ledger.slowest_reply_ms.max(took);
        match answer {
            Ok(Ok(response)) => Ok(Some(response)),
            Ok(Err(refusal)) => {
                ledger.refused(name, &refusal);
                Ok(None)
            }
            Err(err) => {
                ledger.in_doubt(name);
                Err(err)
            }
        }
    }

    fn remember(&mut self, id: u64) {
        self.state.own.push(id);
        if self.state.own.len() > OWN_MAX {
            self.state.own.remove(0);
        }
    }

    async fn submit(&mut self) -> Result<(), CallError> {
        let (request, submitted) = job(&mut self.state.rng, self.env);
        let answer = self.ask("submit", request).await?;
        let Some(Response::Added(added)) = answer else {
            return Ok(());
        };
        let id = added.id.0;
        {
            let mut ledger = lock(self.ledger);
            ledger.acked_submits += 1;
            if ledger.jobs.contains_key(&id) {
                ledger.violations.add(
                    Invariant::IdReuse,
                    format!("a submission was acknowledged with id {id}, which another job had"),
                );
            } else {
                ledger.jobs.entry(id).or_default().spec = Some(submitted);
            }
        }
        self.remember(id);
        Ok(())
    }

    async fn cancel(&mut self) -> Result<(), CallError> {
        let Some(&id) = self.state.rng.pick(&self.state.own) else {
            return Ok(());
        };
        if lock(self.ledger).jobs[&id].cancel == Ack::Acked {
            return Ok(());
        }
        let request = Request::Cancel(JobRef::Id(JobId(id)));
        let answer = self.ask("cancel", request).await.inspect_err(|_| {
            let mut ledger = lock(self.ledger);
            let job = ledger.jobs.get_mut(&id).expect("own jobs are tracked");
            job.cancel = Ack::InDoubt;
        })?;
        if !matches!(answer, Some(Response::Cancelled(_))) {
            return Ok(());
        }
        {
            let mut ledger = lock(self.ledger);
            ledger.acked("cancel");
            ledger.jobs.get_mut(&id).expect("tracked").cancel = Ack::Acked;
        }
        // No run may open after this, and the runs it has now are all it may ever have. Left
        // for the checks when chimed dies first.
        let (head, runs) = cancelled_state(self.conn, id).await?;
        let mut ledger = lock(self.ledger);
        let tracked = ledger.jobs.get_mut(&id).expect("tracked");
        tracked.cancel_head = Some(head);
        tracked.cancel_runs = runs;
        Ok(())
    }

    async fn pause(&mut self) -> Result<(), CallError> {
        let Some(&id) = self.state.rng.pick(&self.state.own) else {
            return Ok(());
        };
        if self.state.paused.contains(&id) {
            return Ok(());
        }
        let timed = self.state.rng.percent(40);
        let request = Request::Pause(PauseRequest {
            target: PauseTarget::Job(JobRef::Id(JobId(id))),
            until_ms: None,
            for_ms: timed.then(|| self.state.rng.range(200, 2000)),
            reason: Some("campaign".into()),
        });
        let op = PauseOp::Pause { timed };
        if !timed {
            self.state.paused.push(id);
        }
        let answer = self.ask("pause", request).await.inspect_err(|_| {
            set_pause(self.ledger, id, op, Ack::InDoubt);
        })?;
        if matches!(answer, Some(Response::Paused(_))) {
            lock(self.ledger).acked("pause");
            set_pause(self.ledger, id, op, Ack::Acked);
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), CallError> {
        if self.state.paused.is_empty() {
            return Ok(());
        }
        let i = self.state.rng.below(self.state.paused.len() as u64) as usize;
        let id = self.state.paused.swap_remove(i);
        let request = Request::Resume(PauseTarget::Job(JobRef::Id(JobId(id))));
        let answer = self.ask("resume", request).await.inspect_err(|_| {
            set_pause(self.ledger, id, PauseOp::Resume, Ack::InDoubt);
        })?;
        if matches!(answer, Some(Response::Resumed(_))) {
            lock(self.ledger).acked("resume");
            set_pause(self.ledger, id, PauseOp::Resume, Ack::Acked);
        }
        Ok(())
    }

    /// Removes a job that `show` says is final, keeping what `show` said for the checks.
    async fn remove(&mut self) -> Result<(), CallError> {
        let Some(&id) = self.state.rng.pick(&self.state.own) else {
            return Ok(());
        };
        let shown = self.conn.show_many(&[id]).await?;
        let Some(Some(detail)) = shown.into_iter().next() else {
            return Ok(());
        };
        if !detail.summary.state.is_final() {
            return Ok(());
        }
        lock(self.ledger)
            .jobs
            .get_mut(&id)
            .expect("tracked")
            .snapshot = Some(detail);
        let request = Request::Remove(JobRef::Id(JobId(id)));
        let answer = self.ask("remove", request).await.inspect_err(|_| {
            lock(self.ledger).jobs.get_mut(&id).expect("tracked").remove = Ack::InDoubt;
        })?;
        if matches!(answer, Some(Response::Removed(_))) {
            let mut ledger = lock(self.ledger);
            ledger.acked("remove");
            ledger.jobs.get_mut(&id).expect("tracked").remove = Ack::Acked;
            self.state.own.retain(|j| *j != id);
            self.state.paused.retain(|j| *j != id);
        }
        Ok(())
    }

    async fn show(&mut self) -> Result<(), CallError> {
        if let Some(&id) = self.state.rng.pick(&self.state.own) {
            self.conn.show_many(&[id]).await?;
        }
        Ok(())
    }

    /// Client 0 only: pauses everything for a moment, or pauses or resumes a limited queue.
    async fn pause_queue(&mut self) -> Result<(), CallError> {
        let rng = &mut self.state.rng;
        if rng.percent(25) {
            let request = Request::Pause(PauseRequest {
                target: PauseTarget::All,
                until_ms: None,
                for_ms: Some(rng.range(100, 400)),
                reason: Some("campaign".into()),
            });
            if self.ask("pause all", request).await?.is_some() {
                lock(self.ledger).acked("pause all");
            }
            return Ok(());
        }
        let queue = QUEUES[rng.below(QUEUES.len() as u64) as usize].0.to_owned();
        if let Some(i) = self.state.paused_queues.iter().position(|q| *q == queue) {
            self.state.paused_queues.swap_remove(i);
            let request = Request::Resume(PauseTarget::Queue(queue.clone()));
            let answer = self.ask("resume queue", request).await.inspect_err(|_| {
                set_queue_pause(self.ledger, &queue, PauseOp::Resume, Ack::InDoubt);
            })?;
            if answer.is_some() {
                lock(self.ledger).acked("resume queue");
                set_queue_pause(self.ledger, &queue, PauseOp::Resume, Ack::Acked);
            }
            return Ok(());
        }
        let timed = rng.percent(50);
        let request = Request::Pause(PauseRequest {
            target: PauseTarget::Queue(queue.clone()),
            until_ms: None,
            for_ms: timed.then(|| rng.range(200, 1500)),
            reason: Some("campaign".into()),
        });
        let op = PauseOp::Pause { timed };
        if !timed {
            self.state.paused_queues.push(queue.clone());
        }
        let answer = self.ask("pause queue", request).await.inspect_err(|_| {
            set_queue_pause(self.ledger, &queue, op, Ack::InDoubt);
        })?;
        if answer.is_some() {
            lock(self.ledger).acked("pause queue");
            set_queue_pause(self.ledger, &queue, op, Ack::Acked);
        }
        Ok(())
    }
}

/// Right after a cancel of job `id` was acknowledged: the newest event, then the job's runs.
pub async fn cancelled_state(
    conn: &mut Client,
    id: u64,
) -> Result<(u64, Option<std::collections::BTreeSet<u64>>), CallError> {
    let head = match conn.call(Request::Status).await? {
        Ok(Response::Status(status)) => status.events_head,
        other => return Err(CallError::Broken(format!("status answered {other:?}"))),
    };
    let shown = conn.show_many(&[id]).await?;
    let runs = shown
        .into_iter()
        .next()
        .flatten()
        .map(|detail| detail.runs.iter().map(|r| r.run.0).collect());
    Ok((head, runs))
}

fn set_pause(ledger: &Mutex<Ledger>, id: u64, op: PauseOp, ack: Ack) {
    lock(ledger)
        .jobs
        .get_mut(&id)
        .expect("own jobs are tracked")
        .pause = Some((op, ack));
}

fn set_queue_pause(ledger: &Mutex<Ledger>, queue: &str, op: PauseOp, ack: Ack) {
    lock(ledger)
        .queue_pauses
        .insert(queue.to_owned(), (op, ack));
}

/// A random job: quick, due soon, long (some with a timeout), recurring, or failing with
/// retries; in the default queue or a limited one.
fn job(rng: &mut Rng, env: &LoadEnv) -> (Request, Submitted) {
    let now_or_soon = |rng: &mut Rng, soon_ms: u64| {
        if rng.percent(50) {
            ScheduleSpec::Now
        } else {
            ScheduleSpec::After(rng.range(0, soon_ms))
        }
    };
    let mut retries = 0;
    let mut count = None;
    let mut timeout_ms = None;
    let mut overlap = None;
    let mut fail_until = 0;
    let (schedule, sleep_ms) = match rng.below(100) {
        // Quick: due now, done in a few ms.
        0..30 => (ScheduleSpec::Now, rng.range(0, 30)),
        // Due soon.
        30..48 => (ScheduleSpec::After(rng.range(50, 2000)), rng.range(0, 200)),
        // Long: a kill lands mid-run; some time out first.
        48..58 => {
            if rng.percent(30) {
                timeout_ms = Some(rng.range(300, 700));
                retries = rng.range(0, 1) as u32;
            }
            (now_or_soon(rng, 300), rng.range(800, 3000))
        }
        // Recurring, a few times.
        58..80 => {
            count = Some(rng.range(2, 10) as u32);
            retries = rng.range(0, 1) as u32;
            overlap = Some(if rng.percent(50) {
                OverlapPolicy::Skip
            } else {
                OverlapPolicy::Queue
            });
            let every = ScheduleSpec::Every {
                interval_ms: rng.range(200, 1000),
                from_ms: None,
            };
            (every, rng.range(0, 400))
        }
        // Failing: fails until attempt `fail_until`, retried up to `retries` times.
        _ => {
            fail_until = rng.range(2, 4) as u32;
            retries = rng.range(0, 3) as u32;
            (now_or_soon(rng, 500), rng.range(0, 100))
        }
    };
    // Long runs go to the default queue or the widest limited one: a queue of one would build
    // a backlog that the campaign never drains.
    let long = sleep_ms >= 800;
    let queue = match rng.below(100) {
        0..70 => None,
        _ if long => Some(QUEUES[QUEUES.len() - 1].0.to_owned()),
        _ => Some(QUEUES[rng.below(QUEUES.len() as u64) as usize].0.to_owned()),
    };
    let argv = job_command::argv(&env.exe, &env.log, sleep_ms, fail_until);
    let submitted = Submitted {
        argv: argv.clone(),
        queue: queue.clone().unwrap_or_else(|| "default".into()),
        retries,
        count,
        recurring: matches!(schedule, ScheduleSpec::Every { .. }),
    };
    let job = JobSpec {
        count,
        overlap,
        queue,
        ..JobSpec::new(Command::Argv(argv), env.cwd.clone(), schedule)
    };
    let exec = ExecSpec {
        retries: Some(retries),
        backoff_base_ms: Some(50),
        backoff_max_ms: Some(400),
        timeout_ms,
        kill_grace_ms: Some(2000),
        keep_runs: Some(1000),
        ..ExecSpec::default()
    };
    let request = Request::Submit(Box::new(SubmitJob {
        job,
        exec,
        journal: false,
    }));
    (request, submitted)
}

/// Sets the queues' limits (before any load).
pub async fn set_queue_limits(socket: &std::path::Path) -> Result<(), String> {
    let mut conn = Client::connect(socket).await.map_err(|e| e.to_string())?;
    for (name, parallel) in QUEUES {
        let request = Request::SetQueue(chime_proto::QueueSettings {
            name: name.into(),
            parallel: Some(Some(parallel)),
            clear_limits: false,
            limits: Default::default(),
        });
        match conn.call(request).await.map_err(|e| e.to_string())? {
            Ok(_) => {}
            Err(refusal) if refusal.code == ErrorCode::Busy => return Err("busy".into()),
            Err(refusal) => return Err(format!("queue {name}: {refusal:?}")),
        }
    }
    Ok(())
}
