//! Migrations from older schemas, each in the one transaction that opens the database.
//!
//! Schema 1 (chimed 0.1.0) had one-shot jobs only: `jobs` rows of [`v1::Job`], and an `active`
//! table (job id → run id) of running jobs. Schema 2 stores [`crate::job::Job`] with schedules,
//! policies, queues and pauses, and replaces `active` by `running` (job id → ()). The migration
//! rewrites every job row and rebuilds every index from the rows with [`Writer::put_job`], so the
//! migrated database satisfies exactly the invariants of a new one. Runs are unchanged.

use super::*;
use crate::job::{self, CatchUp, Next, OpenRun, Overlap, Schedule, State};
use redb::{ReadableTable, WriteTransaction};

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

const ACTIVE_V1: TableDefinition<'_, u64, u64> = TableDefinition::new("active");

pub(super) fn migrate(txn: &WriteTransaction, from: u64) -> Result<(), StoreError> {
    match from {
        1 => from_1(txn),
        other => Err(StoreError::Migration {
            path: PathBuf::new(),
            from: other,
            reason: "no migration from this schema".into(),
        }),
    }
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
                    attempt: old.attempts,
                    due_ms,
                    started_ms,
                    pid,
                }],
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
        pause: None,
        state,
        runs_started: old.attempts,
        last_outcome: old.last_outcome,
        missed_total: 0,
        missed: Vec::new(),
    }
}

fn from_1(txn: &WriteTransaction) -> Result<(), StoreError> {
    // Read every old row first; then clear the indexes and write the rows back through
    // put_job, which rebuilds them.
    let mut jobs = Vec::new();
    {
        let table = txn.open_table(JOBS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let old: v1::Job =
                postcard::from_bytes(value.value()).map_err(|source| StoreError::Corrupt {
                    table: "jobs",
                    key: key.value().to_string(),
                    source,
                })?;
            jobs.push(convert(old));
        }
    }
    txn.delete_table(ACTIVE_V1)?;
    txn.delete_table(DUE)?;
    txn.delete_table(OWNERS)?;
    txn.delete_table(STATES)?;
    txn.delete_table(NAMES)?;
    {
        let mut meta = txn.open_table(META)?;
        for state in JobState::ALL {
            meta.insert(count_key(state), 0)?;
        }
    }
    let mut writer = Writer::new(txn)?;
    for job in &jobs {
        writer.put_job(None, job)?;
    }
    writer.finish()?;
    tracing::info!(jobs = jobs.len(), "migrated jobs to schema 2");
    Ok(())
}
