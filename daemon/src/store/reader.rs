//! Read-only queries over a consistent snapshot.

use super::*;
use chime_proto::{JobId, JobRef, RunId};
use redb::{ReadOnlyTable, ReadTransaction};

/// Which jobs a listing wants.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this owner's jobs (`None`: everyone's, for root).
    pub owner: Option<u32>,
    pub state: Option<JobState>,
    /// Only ids greater than this.
    pub after: Option<JobId>,
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` when there are no more jobs.
    pub next: Option<JobId>,
}

/// A snapshot of the database.
pub struct Reader {
    txn: ReadTransaction,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// How many index entries one listing may examine beyond its page, so that a filter that matches
/// little cannot make one request scan millions of rows. A short page with a `next` cursor tells
/// the client to continue.
const SCAN_BUDGET: usize = 20_000;

impl Reader {
    pub(super) fn new(txn: ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self { txn })
    }

    fn jobs(&self) -> Result<ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        Ok(self.txn.open_table(JOBS)?)
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.jobs()?.get(id.0)? {
            Some(bytes) => decode_job(id.0, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn job_by_ref(&self, job: &JobRef) -> Result<Option<Job>, StoreError> {
        match job {
            JobRef::Id(id) => self.job(*id),
            JobRef::Name(name) => match self.txn.open_table(NAMES)?.get(name.as_str())? {
                Some(id) => self.job(JobId(id.value())),
                None => Ok(None),
            },
        }
    }

    /// A job's runs, oldest first.
    pub fn runs(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        let table = self.txn.open_table(RUNS)?;
        let mut out = Vec::new();
        for entry in table.range((job.0, 0)..=(job.0, u64::MAX))? {
            let (key, value) = entry?;
            out.push(decode_run(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// One run of a job.
    pub fn run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError> {
        let table = self.txn.open_table(RUNS)?;
        match table.get((job.0, run.0))? {
            Some(value) => decode_run((job.0, run.0), value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// A job's latest run.
    pub fn last_run(&self, job: JobId) -> Result<Option<Run>, StoreError> {
        let table = self.txn.open_table(RUNS)?;
        match table.range((job.0, 0)..=(job.0, u64::MAX))?.next_back() {
            Some(entry) => {
                let (key, value) = entry?;
                decode_run(key.value(), value.value()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Jobs by state, for `status`.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let meta = self.txn.open_table(META)?;
        let mut out = Vec::new();
        for state in JobState::ALL {
            out.push((state, meta.get(count_key(state))?.map_or(0, |v| v.value())));
        }
        Ok(out)
    }

    /// The earliest due time in the timer index.
    pub fn first_due(&self) -> Result<Option<i64>, StoreError> {
        let due = self.txn.open_table(DUE)?;
        Ok(due.first()?.map(|(k, _)| k.value().0))
    }

    /// A page of jobs in id order, through the index that fits the filter.
    pub fn list(&self, filter: &JobFilter) -> Result<Page, StoreError> {
        let start = filter.after.map_or(0, |id| id.0.saturating_add(1));
        let limit = filter.limit.max(1);
        // Candidate ids in increasing order from the narrowest index, and whether every
        // candidate already matches the filter.
        let mut candidates: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            match (filter.owner, filter.state) {
                (Some(owner), _) => {
                    let table = self.txn.open_table(OWNERS)?;
                    Box::new(
                        table
                            .range((owner, start)..=(owner, u64::MAX))?
                            .map(|e| e.map(|(k, _)| k.value().1).map_err(StoreError::from)),
                    )
                }
                (None, Some(state)) => {
                    let code = state_code(state);
                    let table = self.txn.open_table(STATES)?;
                    Box::new(
                        table
                            .range((code, start)..=(code, u64::MAX))?
                            .map(|e| e.map(|(k, _)| k.value().1).map_err(StoreError::from)),
                    )
                }
                (None, None) => {
                    let table = self.jobs()?;
                    Box::new(
                        table
                            .range(start..)?
                            .map(|e| e.map(|(k, _)| k.value()).map_err(StoreError::from)),
                    )
                }
            };
        let jobs = self.jobs()?;
        let mut out = Vec::new();
        let mut scanned = 0usize;
        let mut last = None;
        while let Some(id) = candidates.next().transpose()? {
            scanned += 1;
            last = Some(id);
            let Some(bytes) = jobs.get(id)? else { continue };
            let job = decode_job(id, bytes.value())?;
            if filter.state.is_none_or(|s| s == job.state.kind()) {
                out.push(job);
                if out.len() == limit {
                    break;
                }
            }
            if scanned >= limit + SCAN_BUDGET {
                break;
            }
        }
        // There may be more when we stopped early (page full or budget spent).
        let more = match last {
            Some(_) if out.len() == limit || scanned >= limit + SCAN_BUDGET => {
                candidates.next().is_some()
            }
            _ => false,
        };
        Ok(Page {
            next: if more { last.map(JobId) } else { None },
            jobs: out,
        })
    }
}
