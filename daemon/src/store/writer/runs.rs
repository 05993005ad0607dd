//! The writer's view of runs: run ids, run records, and the pruning of a job's old runs.

use super::Writer;
use crate::job::{Job, Run};
use crate::store::StoreError;
use crate::store::record::{decode_run, seal_into};
use chime_proto::{JobId, RunId};

impl Writer<'_> {
    /// The next run id to allocate. The state machine allocates run ids from it; give back the
    /// advanced value with [`Writer::set_next_run_id`].
    pub fn next_run_id(&self) -> u64 {
        self.next_run
    }

    pub fn set_next_run_id(&mut self, next: u64) {
        debug_assert!(next >= self.next_run, "run ids never go back");
        self.next_run = self.next_run.max(next);
    }

    /// Stores a run record (new or updated).
    pub fn put_run(&mut self, run: &Run) -> Result<(), StoreError> {
        self.runs
            .insert((run.job.0, run.id.0), seal_into(&mut self.scratch, run))?;
        Ok(())
    }

    /// Deletes a run record (a run whose process never started).
    pub fn delete_run(&mut self, job: JobId, run: RunId) -> Result<(), StoreError> {
        self.runs.remove((job.0, run.0))?;
        Ok(())
    }

    /// A job's run ids, oldest first.
    pub fn run_ids(&self, job: JobId) -> Result<Vec<RunId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.runs.range((job.0, 0)..=(job.0, u64::MAX))? {
            let ((_, run), _) = entry?;
            out.push(RunId(run));
        }
        Ok(out)
    }

    /// A job's latest run.
    pub fn last_run(&self, job: JobId) -> Result<Option<Run>, StoreError> {
        match self.runs.last_in((job.0, 0)..=(job.0, u64::MAX))? {
            Some((key, value)) => decode_run(key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Removes a job's oldest finished runs beyond `keep`. Returns the ids removed.
    ///
    /// A job stores at most the runs it started (`runs_started`: a run that never started is
    /// deleted and uncounted), so one that started no more than `keep` besides its open ones has
    /// nothing to prune, and its runs are not read: a one-shot job's end, or a young recurring
    /// job's, costs no scan.
    pub fn prune_runs(&mut self, job: &Job, keep: usize) -> Result<Vec<RunId>, StoreError> {
        let open_count = job.state.runs().len();
        if (job.runs_started as usize).saturating_sub(open_count) <= keep {
            return Ok(Vec::new());
        }
        let open: Vec<RunId> = job.state.runs().iter().map(|r| r.run).collect();
        let finished: Vec<RunId> = self
            .run_ids(job.id)?
            .into_iter()
            .filter(|r| !open.contains(r))
            .collect();
        let excess = finished.len().saturating_sub(keep);
        let doomed: Vec<RunId> = finished.into_iter().take(excess).collect();
        for run in &doomed {
            self.runs.remove((job.id.0, run.0))?;
        }
        Ok(doomed)
    }
}
