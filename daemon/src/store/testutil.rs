//! Helpers shared by the store's tests and the engine's batch tests: a store in a temporary
//! directory, and jobs added to it the way chimed adds them, through a batch.

use super::{Store, StoreOptions};
use crate::engine::batch::{self, Facts, Work};
use chime_proto::{Command, JobId, JobSpec, ScheduleSpec};
use tempfile::TempDir;

/// The facts a batch is given: `max_running` slots, no limits and nothing running.
pub(crate) fn env(max_running: usize) -> Facts {
    Facts {
        database: std::path::Path::new("test.redb").into(),
        on_time_since: 0,
        event_retention: 1000,
        local_tz: jiff::tz::TimeZone::UTC,
        max_running,
        running: Default::default(),
        running_by_owner: Default::default(),
        limits: std::sync::Arc::new(unlimited()),
        quick: Default::default(),
        admin_uid: 0,
        release_all: false,
        continue_release: Default::default(),
    }
}

/// Limits that hold no one back: these tests are about the engine, not the limits.
pub(crate) fn unlimited() -> crate::limits::Limits {
    let mut limits = crate::limits::Limits::defaults(0);
    limits.running_per_user = 1_000_000;
    limits.jobs_per_user = u64::MAX;
    limits
}

/// A new store in `dir`.
pub(crate) fn open(dir: &TempDir) -> Store {
    Store::open(&dir.path().join("chime.redb"), &StoreOptions::default()).expect("open")
}

/// A job that runs `/bin/true` from `/`.
pub(crate) fn spec(name: Option<&str>, schedule: ScheduleSpec) -> JobSpec {
    JobSpec {
        name: name.map(Into::into),
        ..JobSpec::new(Command::Argv(vec!["/bin/true".into()]), "/", schedule)
    }
}

/// Submits `spec` as `uid` at `now` through a batch; the new job's id.
pub(crate) fn add(store: &Store, uid: u32, spec: JobSpec, now: i64) -> JobId {
    let work = vec![Work::Submit {
        uid,
        user: format!("user{uid}"),
        job: Box::new(spec),
        exec: Default::default(),
    }];
    let applied = store
        .write(|w| batch::apply(w, &env(0), work, now, false))
        .unwrap();
    match applied.replies.into_iter().next().flatten().unwrap() {
        Ok(chime_proto::Response::Added(added)) => added.id,
        other => panic!("add failed: {other:?}"),
    }
}
