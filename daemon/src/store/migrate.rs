//! Migrations from older schemas, each in the one transaction that opens the database.
//!
//! Each older schema's row types are frozen here, and each migration goes straight to the
//! current schema: it decodes every job row with the old types, converts it, and rebuilds every
//! index from the converted rows with [`Writer::put_job`], so a migrated database satisfies
//! exactly the invariants of a new one. Runs are unchanged in every schema so far.
//!
//! - Schema 1 (chimed 0.1.0): one-shot jobs only ([`v1::Job`]), and an `active` table (job id →
//!   run id) of running jobs.
//! - Schema 2: schedules, policies, queues and pauses ([`v2::Job`]); owed runs are due times.
//! - Schema 3: execution policy per job (retries, timeout, output cap, retention), owed runs
//!   with their attempt and backoff, and the `expiry` index ([`v3::Job`]).
//! - Schema 4 (current): output to the journal per job, the job file that declares a job (and
//!   the `sources` index), timers (a command variant and a run outcome appended, which older rows
//!   never hold), and the `events` log.

use super::*;
use crate::job::{self, CatchUp, Exec, Next, OpenRun, Overlap, Owed, Schedule, State};
use redb::{ReadableTable, TableHandle, WriteTransaction};

/// The types of schema 1, as 0.1.0 wrote them. Never change these.
mod v1 {
    use chime_proto::{Command, JobId, Outcome, RunId};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Job {
        pub id: JobId,
        pub name: Option<String>,
        pub owner: u32,
        pub created_ms: i64,
        pub command: Command,
        pub cwd: String,
        pub env: Vec<(String, String)>,
        pub state: State,
        pub attempts: u32,
        pub last_outcome: Option<Outcome>,
    }

    #[derive(Debug, Deserialize)]
    pub enum State {
        Scheduled {
            due_ms: i64,
        },
        Running {
            run: RunId,
            due_ms: i64,
            started_ms: i64,
            pid: Option<u32>,
            cancel_requested: bool,
        },
        Succeeded {
            at_ms: i64,
        },
        Failed {
            at_ms: i64,
        },
        Cancelled {
            at_ms: i64,
        },
    }
}

/// The types of schema 2. Never change these.
mod v2 {
    use chime_proto::{Command, JobId, Outcome, RunId};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Job {
        pub id: JobId,
        pub name: Option<String>,
        pub owner: u32,
        pub created_ms: i64,
        pub command: Command,
        pub cwd: String,
        pub env: Vec<(String, String)>,
        pub schedule: Schedule,
        pub count: Option<u32>,
        pub until_ms: Option<i64>,
        pub catch_up: CatchUp,
        pub deadline_ms: Option<u64>,
        pub overlap: Overlap,
        pub queue: String,
        pub pause: Option<Pause>,
        pub state: State,
        pub runs_started: u32,
        pub last_outcome: Option<Outcome>,
        pub missed_total: u64,
        pub missed: Vec<Missed>,
    }

    #[derive(Debug, Deserialize)]
    pub enum Schedule {
        Once { at_ms: i64 },
        Every { anchor_ms: i64, interval_ms: u64 },
        Cron { expr: String, tz: Option<String> },
    }

    #[derive(Debug, Deserialize)]
    pub enum CatchUp {
        Skip,
        Latest,
        All { limit: u32 },
    }

    #[derive(Debug, Deserialize)]
    pub enum Overlap {
        Skip,
        Queue,
        Allow,
        Replace,
    }

    #[derive(Debug, Deserialize)]
    pub struct Pause {
        pub since_ms: i64,
        pub until_ms: Option<i64>,
        pub reason: Option<String>,
        pub by_uid: u32,
    }

    #[derive(Debug, Deserialize)]
    pub struct Missed {
        pub due_ms: i64,
        pub at_ms: i64,
        pub reason: MissedReason,
    }

    #[derive(Debug, Deserialize)]
    pub enum MissedReason {
        CatchUp,
        Deadline,
        Overlap,
        Skipped,
        TooMany,
    }

    #[derive(Debug, Deserialize)]
    pub enum State {
        Active {
            next: Next,
            owed: Vec<i64>,
            runs: Vec<OpenRun>,
            waiting: bool,
            cancelling: bool,
        },
        Succeeded {
            at_ms: i64,
        },
        Failed {
            at_ms: i64,
        },
        Cancelled {
            at_ms: i64,
        },
    }

    #[derive(Debug, Deserialize)]
    pub enum Next {
        None,
        Scheduled(i64),
        Held(i64),
    }

    #[derive(Debug, Deserialize)]
    pub struct OpenRun {
        pub run: RunId,
        // Decoded for its position; schema 2 counted attempts per job, schema 3 per occurrence.
        #[allow(dead_code)]
        pub attempt: u32,
        pub due_ms: i64,
        pub started_ms: i64,
        pub pid: Option<u32>,
    }
}

/// The types of schema 3. Never change these. Schedules, policies, pauses and missed
/// occurrences had the same shape as in schema 2.
mod v3 {
    use super::v2::{CatchUp, Missed, Overlap, Pause, Schedule};
    use chime_proto::{Command, JobId, Outcome, RunId};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Job {
        pub id: JobId,
        pub name: Option<String>,
        pub owner: u32,
        pub created_ms: i64,
        pub command: Command,
        pub cwd: String,
        pub env: Vec<(String, String)>,
        pub schedule: Schedule,
        pub count: Option<u32>,
        pub until_ms: Option<i64>,
        pub catch_up: CatchUp,
        pub deadline_ms: Option<u64>,
        pub overlap: Overlap,
        pub queue: String,
        pub exec: Exec,
        pub pause: Option<Pause>,
        pub state: State,
        pub runs_started: u32,
        pub occurrences_started: u32,
        pub last_outcome: Option<Outcome>,
        pub missed_total: u64,
        pub missed: Vec<Missed>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Exec {
        pub retries: u32,
        pub backoff_base_ms: u64,
        pub backoff_max_ms: u64,
        pub retry_on: u8,
        pub timeout_ms: Option<u64>,
        pub kill_grace_ms: u64,
        pub max_output: u64,
        pub keep_runs: u32,
        pub retention_ms: u64,
    }

    #[derive(Debug, Deserialize)]
    pub enum State {
        Active {
            next: super::v2::Next,
            owed: Vec<Owed>,
            runs: Vec<OpenRun>,
            wake: Option<i64>,
            waiting: bool,
            cancelling: bool,
        },
        Succeeded {
            at_ms: i64,
        },
        Failed {
            at_ms: i64,
        },
        Cancelled {
            at_ms: i64,
        },
    }

    #[derive(Debug, Deserialize)]
    pub struct Owed {
        pub due_ms: i64,
        pub attempt: u32,
        pub not_before_ms: i64,
        pub manual: bool,
    }

    #[derive(Debug, Deserialize)]
    pub struct OpenRun {
        pub run: RunId,
        pub attempt: u32,
        pub due_ms: i64,
        pub started_ms: i64,
        pub pid: Option<u32>,
        pub manual: bool,
    }
}

const ACTIVE_V1: TableDefinition<'_, u64, u64> = TableDefinition::new("active");

pub(super) fn migrate(txn: &WriteTransaction, from: u64) -> Result<(), StoreError> {
    match from {
        1 => from_1(txn),
        2 => from_2(txn),
        3 => from_3(txn),
        other => Err(StoreError::Migration {
            path: PathBuf::new(),
            from: other,
            reason: "no migration from this schema".into(),
        }),
    }
}

/// The account name of `uid` now (older schemas did not record it); empty when the uid has no
/// account, and then the job's runs are refused until it is replaced.
fn account_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}

fn convert(old: v1::Job) -> job::Job {
    let (schedule_at, state) = match old.state {
        v1::State::Scheduled { due_ms } => (due_ms, State::scheduled(Some(due_ms))),
        v1::State::Running {
            run,
            due_ms,
            started_ms,
            pid,
            cancel_requested,
        } => (
            due_ms,
            State::Active {
                next: Next::None,
                owed: Vec::new(),
                runs: vec![OpenRun {
                    run,
                    attempt: 1,
                    due_ms,
                    started_ms,
                    pid,
                    manual: false,
                }],
                wake: None,
                waiting: false,
                cancelling: cancel_requested,
            },
        ),
        v1::State::Succeeded { at_ms } => (old.created_ms, State::Succeeded { at_ms }),
        v1::State::Failed { at_ms } => (old.created_ms, State::Failed { at_ms }),
        v1::State::Cancelled { at_ms } => (old.created_ms, State::Cancelled { at_ms }),
    };
    job::Job {
        id: old.id,
        name: old.name,
        owner: old.owner,
        owner_name: account_name(old.owner),
        created_ms: old.created_ms,
        command: old.command,
        cwd: old.cwd,
        env: old.env,
        schedule: Schedule::Once { at_ms: schedule_at },
        count: None,
        until_ms: None,
        catch_up: CatchUp::Latest,
        deadline_ms: None,
        overlap: Overlap::Skip,
        queue: "default".into(),
        exec: Exec::default(),
        pause: None,
        state,
        runs_started: old.attempts,
        occurrences_started: old.attempts,
        last_outcome: old.last_outcome,
        missed_total: 0,
        missed: Vec::new(),
        source: None,
    }
}

fn convert_2(old: v2::Job) -> job::Job {
    let state = match old.state {
        v2::State::Active {
            next,
            owed,
            runs,
            waiting,
            cancelling,
        } => State::Active {
            next: next_2(next),
            owed: owed.into_iter().map(Owed::first).collect(),
            runs: runs
                .into_iter()
                .map(|r| OpenRun {
                    run: r.run,
                    // Schema 2 counted attempts per job; there were no retries, so each run was
                    // its occurrence's first attempt.
                    attempt: 1,
                    due_ms: r.due_ms,
                    started_ms: r.started_ms,
                    pid: r.pid,
                    manual: false,
                })
                .collect(),
            wake: None,
            waiting,
            cancelling,
        },
        v2::State::Succeeded { at_ms } => State::Succeeded { at_ms },
        v2::State::Failed { at_ms } => State::Failed { at_ms },
        v2::State::Cancelled { at_ms } => State::Cancelled { at_ms },
    };
    job::Job {
        id: old.id,
        name: old.name,
        owner: old.owner,
        owner_name: account_name(old.owner),
        created_ms: old.created_ms,
        command: old.command,
        cwd: old.cwd,
        env: old.env,
        schedule: match old.schedule {
            v2::Schedule::Once { at_ms } => Schedule::Once { at_ms },
            v2::Schedule::Every {
                anchor_ms,
                interval_ms,
            } => Schedule::Every {
                anchor_ms,
                interval_ms,
            },
            v2::Schedule::Cron { expr, tz } => Schedule::Cron { expr, tz },
        },
        count: old.count,
        until_ms: old.until_ms,
        catch_up: match old.catch_up {
            v2::CatchUp::Skip => CatchUp::Skip,
            v2::CatchUp::Latest => CatchUp::Latest,
            v2::CatchUp::All { limit } => CatchUp::All { limit },
        },
        deadline_ms: old.deadline_ms,
        overlap: match old.overlap {
            v2::Overlap::Skip => Overlap::Skip,
            v2::Overlap::Queue => Overlap::Queue,
            v2::Overlap::Allow => Overlap::Allow,
            v2::Overlap::Replace => Overlap::Replace,
        },
        queue: old.queue,
        exec: Exec::default(),
        pause: old.pause.map(|p| job::Pause {
            since_ms: p.since_ms,
            until_ms: p.until_ms,
            reason: p.reason,
            by_uid: p.by_uid,
        }),
        state,
        runs_started: old.runs_started,
        occurrences_started: old.runs_started,
        last_outcome: old.last_outcome,
        missed_total: old.missed_total,
        missed: old
            .missed
            .into_iter()
            .map(|m| job::Missed {
                due_ms: m.due_ms,
                at_ms: m.at_ms,
                reason: match m.reason {
                    v2::MissedReason::CatchUp => job::MissedReason::CatchUp,
                    v2::MissedReason::Deadline => job::MissedReason::Deadline,
                    v2::MissedReason::Overlap => job::MissedReason::Overlap,
                    v2::MissedReason::Skipped => job::MissedReason::Skipped,
                    v2::MissedReason::TooMany => job::MissedReason::TooMany,
                },
            })
            .collect(),
        source: None,
    }
}

fn next_2(next: v2::Next) -> Next {
    match next {
        v2::Next::None => Next::None,
        v2::Next::Scheduled(t) => Next::Scheduled(t),
        v2::Next::Held(t) => Next::Held(t),
    }
}

/// Schema 3 differs only in what schema 4 added: every field carries over.
fn convert_3(old: v3::Job) -> job::Job {
    let state = match old.state {
        v3::State::Active {
            next,
            owed,
            runs,
            wake,
            waiting,
            cancelling,
        } => State::Active {
            next: next_2(next),
            owed: owed
                .into_iter()
                .map(|o| Owed {
                    due_ms: o.due_ms,
                    attempt: o.attempt,
                    not_before_ms: o.not_before_ms,
                    manual: o.manual,
                })
                .collect(),
            runs: runs
                .into_iter()
                .map(|r| OpenRun {
                    run: r.run,
                    attempt: r.attempt,
                    due_ms: r.due_ms,
                    started_ms: r.started_ms,
                    pid: r.pid,
                    manual: r.manual,
                })
                .collect(),
            wake,
            waiting,
            cancelling,
        },
        v3::State::Succeeded { at_ms } => State::Succeeded { at_ms },
        v3::State::Failed { at_ms } => State::Failed { at_ms },
        v3::State::Cancelled { at_ms } => State::Cancelled { at_ms },
    };
    // The fields schema 3 shares with schema 2 convert the same way.
    let shared = convert_2(v2::Job {
        id: old.id,
        name: old.name,
        owner: old.owner,
        created_ms: old.created_ms,
        command: old.command,
        cwd: old.cwd,
        env: old.env,
        schedule: old.schedule,
        count: old.count,
        until_ms: old.until_ms,
        catch_up: old.catch_up,
        deadline_ms: old.deadline_ms,
        overlap: old.overlap,
        queue: old.queue,
        pause: old.pause,
        state: v2::State::Succeeded { at_ms: 0 },
        runs_started: old.runs_started,
        last_outcome: old.last_outcome,
        missed_total: old.missed_total,
        missed: old.missed,
    });
    let e = old.exec;
    job::Job {
        state,
        occurrences_started: old.occurrences_started,
        exec: Exec {
            retries: e.retries,
            backoff_base_ms: e.backoff_base_ms,
            backoff_max_ms: e.backoff_max_ms,
            retry_on: e.retry_on,
            timeout_ms: e.timeout_ms,
            kill_grace_ms: e.kill_grace_ms,
            max_output: e.max_output,
            keep_runs: e.keep_runs,
            retention_ms: e.retention_ms,
            journal: false,
        },
        ..shared
    }
}

/// Decodes every job row with `decode`, then clears the indexes and writes the rows back through
/// put_job, which rebuilds them.
fn rewrite_jobs<T: serde::de::DeserializeOwned>(
    txn: &WriteTransaction,
    convert: impl Fn(T) -> job::Job,
    index_tables: &[&str],
) -> Result<usize, StoreError> {
    let mut jobs = Vec::new();
    {
        let table = txn.open_table(JOBS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let old: T = postcard::from_bytes(value.value()).map_err(|err| {
                StoreError::Corrupt(Damage::new(
                    "jobs",
                    key.value(),
                    format!("it does not decode: {err}"),
                ))
            })?;
            jobs.push(convert(old));
        }
    }
    for name in index_tables {
        // Deleting by handle works whatever the key and value types were.
        let handle = txn.list_tables()?.find(|t| t.name() == *name);
        if let Some(handle) = handle {
            txn.delete_table(handle)?;
        }
    }
    {
        let mut meta = txn.open_table(META)?;
        for state in JobState::ALL {
            meta.insert(count_key(state), 0)?;
        }
        let stale: Vec<String> = meta
            .range("waiting."..="waiting.\u{10ffff}")?
            .filter_map(|e| e.ok().map(|(k, _)| k.value().to_owned()))
            .collect();
        for key in stale {
            meta.remove(key.as_str())?;
        }
    }
    let mut writer = Writer::new(txn)?;
    for job in &jobs {
        writer.put_job(None, job)?;
    }
    writer.finish()?;
    seal_runs(txn)?;
    Ok(jobs.len())
}

/// Seals every run record (older schemas stored them without a checksum; see [`super::seal`]).
fn seal_runs(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut runs = txn.open_table(RUNS)?;
    let mut sealed = Vec::new();
    for entry in runs.iter()? {
        let (key, value) = entry?;
        let run: job::Run = postcard::from_bytes(value.value()).map_err(|err| {
            let (job, run) = key.value();
            StoreError::Corrupt(Damage::new(
                "runs",
                format!("{job}/{run}"),
                format!("it does not decode: {err}"),
            ))
        })?;
        sealed.push((key.value(), seal(&run)));
    }
    for (key, bytes) in sealed {
        runs.insert(key, bytes.as_slice())?;
    }
    Ok(())
}

fn from_1(txn: &WriteTransaction) -> Result<(), StoreError> {
    let n = rewrite_jobs(
        txn,
        convert,
        &[ACTIVE_V1.name(), "due", "owners", "states", "names"],
    )?;
    tracing::info!(jobs = n, "migrated jobs from schema 1");
    Ok(())
}

fn from_2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let n = rewrite_jobs(
        txn,
        convert_2,
        &[
            "due",
            "waiting",
            // Schema 2 had a table of running jobs; the `states` index serves instead.
            "running",
            "owners",
            "states",
            "names",
            "queue_jobs",
        ],
    )?;
    tracing::info!(jobs = n, "migrated jobs from schema 2");
    Ok(())
}

fn from_3(txn: &WriteTransaction) -> Result<(), StoreError> {
    let n = rewrite_jobs(
        txn,
        convert_3,
        &[
            "due",
            "waiting",
            "owners",
            "states",
            "names",
            "queue_jobs",
            "expiry",
        ],
    )?;
    tracing::info!(jobs = n, "migrated jobs from schema 3");
    Ok(())
}
