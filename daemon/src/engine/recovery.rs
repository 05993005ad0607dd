//! Start-up recovery: the runs that were open when chimed last stopped are closed as `lost`, in
//! one transaction, before the engine runs and before chimed says it is ready. Before they are
//! closed (and so before any of them is retried), what they left running is ended
//! ([`crate::cgroup::sweep`]).

use super::batch::{self, Facts, Work};
use super::{Engine, EngineConfig};
use crate::job::now_ms;
use crate::machine::Event;
use crate::store::{Store, StoreError};
use chime_proto::RunId;
use std::collections::{HashMap, HashSet};

impl Engine {
    /// Closes every run that was open when the daemon last stopped as `lost`. Call before the
    /// engine runs (and before the daemon says it is ready). `end_leftovers` is given the open
    /// runs first, ends what they left running and says how many processes of each it ended.
    /// Returns how many jobs had runs open.
    pub fn recover(
        store: &Store,
        config: &EngineConfig,
        end_leftovers: &mut dyn FnMut(&HashSet<RunId>) -> HashMap<RunId, u32>,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        store.write(|w| {
            let open = w.running_jobs()?;
            let mut open_runs = HashSet::new();
            for job in &open {
                if let Some(job) = w.job(*job)? {
                    open_runs.extend(job.state.runs().iter().map(|r| r.run));
                }
            }
            let _ended = end_leftovers(&open_runs);
            let work = open
                .iter()
                .map(|job| {
                    tracing::warn!(
                        job_id = job.0,
                        "job had runs in progress when chimed stopped; recording them as lost"
                    );
                    Work::Runner {
                        job: *job,
                        event: Event::Lost,
                    }
                })
                .collect();
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
            };
            batch::apply(w, &env, work, now, false)?;
            Ok(open.len())
        })
    }
}
