//! Helpers shared by the store's tests and the engine's batch tests: a store in a temporary
//! directory, and jobs put in it as a submission would make them (resolved by [`crate::spec`],
//! made by [`crate::machine::Spec::into_job`]), without the engine above the store.

use super::{Store, StoreOptions, Writer};
use chime_proto::{Command, JobId, JobSpec, ScheduleSpec};
use tempfile::TempDir;

/// A new store in `dir`; with `CHIME_UNIT_STORE=memory`, a store whose tables are kept by
/// the byte-keyed side (PostgreSQL's, in memory) instead, so that the store's and the engine's
/// tests hold both sides to the same behaviour (`.ci/run` runs them both ways).
/// The tables in memory outlive the store, as a file would: reopening the "store in `dir`"
/// finds them.
pub(crate) fn open(dir: &TempDir) -> Store {
    match std::env::var("CHIME_UNIT_STORE").as_deref() {
        Ok("memory") => {
            static TABLES: std::sync::Mutex<Vec<(std::path::PathBuf, super::InMemoryTables)>> =
                std::sync::Mutex::new(Vec::new());
            let mut all = TABLES.lock().unwrap_or_else(|p| p.into_inner());
            let tables = match all.iter().find(|(path, _)| path == dir.path()) {
                Some((_, tables)) => tables.clone(),
                None => {
                    let tables = super::InMemoryTables::default();
                    all.push((dir.path().to_owned(), tables.clone()));
                    tables
                }
            };
            Store::open_in_memory(tables).expect("open in memory")
        }
        Ok("redb") | Err(_) => open_file(dir),
        Ok(other) => panic!("CHIME_UNIT_STORE={other:?}: give `redb` or `memory`"),
    }
}

/// A new store in the redb file `dir/chime.redb`, whatever `CHIME_UNIT_STORE` says (tests of
/// the file itself).
pub(crate) fn open_file(dir: &TempDir) -> Store {
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
