//! Start-up recovery: the runs that were open when chimed last stopped are closed as `lost`, in
//! one transaction, before the engine runs and before chimed says it is ready.

use super::batch::{self, Facts, Work};
use super::{Engine, EngineConfig};
use crate::job::now_ms;
use crate::machine::Event;
use crate::store::{Store, StoreError};

impl Engine {
    /// Closes every run that was open when the daemon last stopped as `lost`. Call before the
    /// engine runs (and before the daemon says it is ready). Returns how many jobs had runs open.
    pub fn recover(store: &Store, config: &EngineConfig) -> Result<usize, StoreError> {
        let now = now_ms();
        store.write(|w| {
            let open = w.running_jobs()?;
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
