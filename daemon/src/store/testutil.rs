//! Helpers shared by the store's tests and the engine's batch tests: a store in a temporary
//! directory, and jobs put in it as a submission would make them (resolved by [`crate::spec`],
//! made by [`crate::machine::Spec::into_job`]), without the engine above the store.

use super::{Store, StoreOptions, Writer};
use chime_proto::{Command, JobId, JobSpec, ScheduleSpec};
use tempfile::TempDir;

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

/// Puts `spec` as a new job of `uid` submitted at `now`, in the transaction of `w`.
pub(crate) fn put(w: &mut Writer<'_>, uid: u32, spec: JobSpec, now: i64) -> JobId {
    let tz = jiff::tz::TimeZone::UTC;
    let (resolved, first_due) =
        crate::spec::resolve(&spec, Default::default(), now, &tz).expect("a spec that resolves");
    let id = w.allocate_job_id();
    let job = crate::job::Job {
        name: spec.name,
        ..resolved.into_job(id, (uid, format!("user{uid}")), now, first_due)
    };
    w.put_job(None, &job).expect("put the job");
    id
}

/// [`put`] in a transaction of its own; the new job's id.
pub(crate) fn add(store: &Store, uid: u32, spec: JobSpec, now: i64) -> JobId {
    store.write(|w| Ok(put(w, uid, spec, now))).unwrap()
}
