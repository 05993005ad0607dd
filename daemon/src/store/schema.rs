//! The on-disk layout: the table definitions, the keys of `meta`, the state codes of the
//! `states` index, and the small records stored as they are (queue records, pause targets).
//! What each table holds is documented in the store's module docs ([`super`]).

use chime_proto::JobState;
use redb::TableDefinition;

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");
pub(super) const NAMES: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("names");
pub(super) const DUE: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("due");
pub(super) const WAITING: TableDefinition<'_, (&str, u32, i64, u64), ()> =
    TableDefinition::new("waiting");
pub(super) const RUNS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("runs");
pub(super) const OWNERS: TableDefinition<'_, (u32, u64), ()> = TableDefinition::new("owners");
pub(super) const STATES: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("states");
pub(super) const QUEUE_JOBS: TableDefinition<'_, (&str, u64), ()> =
    TableDefinition::new("queue_jobs");
pub(super) const QUEUES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("queues");
pub(super) const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
pub(super) const PAUSE_TIMERS: TableDefinition<'_, (i64, &str), ()> =
    TableDefinition::new("pause_timers");
pub(super) const EXPIRY: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("expiry");
pub(super) const SOURCES: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("sources");
pub(super) const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
pub(super) const EVENT_OWNERS: TableDefinition<'_, (u32, u64), ()> =
    TableDefinition::new("event_owners");

pub(super) const KEY_SCHEMA: &str = "schema_version";
pub(super) const KEY_NEXT_JOB: &str = "next_job_id";
pub(super) const KEY_NEXT_RUN: &str = "next_run_id";
pub(super) const KEY_NEXT_EVENT: &str = "next_event_seq";
pub(super) const KEY_PAUSE_ALL: &str = "pause.all";

pub(super) fn count_key(state: JobState) -> &'static str {
    match state {
        JobState::Scheduled => "count.scheduled",
        JobState::Running => "count.running",
        JobState::Succeeded => "count.succeeded",
        JobState::Failed => "count.failed",
        JobState::Cancelled => "count.cancelled",
        JobState::Queued => "count.queued",
        JobState::Paused => "count.paused",
        JobState::Damaged => "count.damaged",
    }
}

pub(super) fn waiting_key(queue: &str) -> String {
    format!("waiting.{queue}")
}

pub(super) fn owned_key(uid: u32) -> String {
    format!("owned.{uid}")
}

pub(super) fn events_key(uid: u32) -> String {
    format!("events.{uid}")
}

pub(super) fn state_code(state: JobState) -> u8 {
    match state {
        JobState::Scheduled => 0,
        JobState::Running => 1,
        JobState::Succeeded => 2,
        JobState::Failed => 3,
        JobState::Cancelled => 4,
        JobState::Queued => 5,
        JobState::Paused => 6,
        JobState::Damaged => 7,
    }
}

/// A queue's settings, as stored. A queue without a record has no limit and no pause.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueRecord {
    /// Most runs at once; `None`: only the daemon's limit.
    pub parallel: Option<u32>,
    pub pause: Option<crate::job::PauseInfo>,
    /// The resources each run of the queue's jobs may take, where the job sets none: looked up
    /// when a run is opened.
    pub limits: chime_proto::ResourceLimits,
}

/// What a timed pause ends: the key of `pause_timers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseKey {
    All,
    Queue(String),
    Job(chime_proto::JobId),
}

impl PauseKey {
    pub(super) fn encode(&self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Queue(q) => format!("queue:{q}"),
            Self::Job(id) => format!("job:{id}"),
        }
    }

    pub(super) fn decode(text: &str) -> Option<Self> {
        if text == "all" {
            return Some(Self::All);
        }
        if let Some(q) = text.strip_prefix("queue:") {
            return Some(Self::Queue(q.into()));
        }
        text.strip_prefix("job:")?
            .parse()
            .ok()
            .map(|id| Self::Job(chime_proto::JobId(id)))
    }
}
