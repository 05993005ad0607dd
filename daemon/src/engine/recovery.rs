//! Start-up recovery: the runs that were open when chimed last stopped are closed as `lost`, in
//! one transaction, before the engine runs and before chimed says it is ready. Before they are
//! closed (and so before any of them is retried), what was still running in their cgroups is
//! ended (by the caller's `end_leftovers`, [`crate::cgroup::sweep`]), and each lost run records
//! how many of its processes that was, so its history says that a retry did not overlap them.

use super::batch::{self, Facts, Work};
use super::{Engine, EngineConfig};
use crate::job::now_ms;
use crate::machine::Event;
use crate::store::{Store, StoreError};
use chime_proto::RunId;
use std::collections::{BTreeMap, HashMap, HashSet};

impl Engine {
    /// Closes every run that was open when the daemon last stopped as `lost`. Call before the
    /// engine runs (and before the daemon says it is ready). `end_leftovers` is given the open
    /// runs first; it ends what was still running in their cgroups and says how many processes
    /// of each run that was (runs with none may be absent or 0), which is recorded with the run.
    /// Returns how many jobs had runs open.
    pub fn recover(
        store: &Store,
        config: &EngineConfig,
        end_leftovers: &mut dyn FnMut(&HashSet<RunId>) -> HashMap<RunId, u32>,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let host = config.host.clone();
        store.write(|w| {
            // This host's runs: in a fleet, the others' go on; what it ran before no longer
            // counts against queue limits.
            if let Some(host) = &host {
                w.clear_fleet_running(host)?;
            }
            let mut open = Vec::new();
            let mut open_runs = HashSet::new();
            for id in w.running_jobs()? {
                if let Some(job) = w.job(id)? {
                    let mine: Vec<RunId> = job
                        .state
                        .runs()
                        .iter()
                        .filter(|r| r.host == host)
                        .map(|r| r.run)
                        .collect();
                    if !mine.is_empty() {
                        open.push(id);
                        open_runs.extend(mine);
                    }
                }
            }
            let ended = &end_leftovers(&open_runs);
            let mut work = Vec::with_capacity(open.len());
            let mut recorded = 0;
            for job in &open {
                tracing::warn!(
                    job_id = job.0,
                    "job had runs in progress when chimed stopped; recording them as lost"
                );
                let mut ended_here = BTreeMap::new();
                if !ended.is_empty()
                    && let Some(found) = w.job(*job)?
                {
                    for open in found.state.runs() {
                        // A cgroup found empty ended nothing: recorded as nothing.
                        if let Some(n) = ended.get(&open.run).filter(|n| **n > 0) {
                            ended_here.insert(open.run, *n);
                        }
                    }
                }
                recorded += ended_here.len();
                work.push(Work::Runner {
                    job: *job,
                    event: Event::Lost {
                        ended: ended_here,
                        host: host.clone(),
                    },
                });
            }
            let left = ended.values().filter(|n| **n > 0).count();
            if recorded < left {
                // Left over by a run the database already has closed (chimed died between the
                // commit of its end and the removal of its cgroup): nothing to record.
                tracing::info!(
                    runs = left - recorded,
                    "processes of runs already closed were ended at start"
                );
            }
            let env = Facts {
                database: store.path().into(),
                on_time_since: config.started_ms,
                event_retention: config.event_retention,
                local_tz: config.local_tz.clone(),
                max_running: config.max_running,
                running: Default::default(),
                running_by_owner: Default::default(),
                limits: config.limits.get(),
                quick: Default::default(),
                admin_uid: config.admin_uid,
                release_all: false,
                continue_release: Default::default(),
                host: host.clone(),
            };
            batch::apply(w, &env, work, now, false)?;
            Ok(open.len())
        })
    }
}
