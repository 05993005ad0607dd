//! Read-only queries over a consistent snapshot.

use super::StoreError;
use super::lookup::{Found, Named, resolve_name};
use super::record::{Damage, decode_event, decode_job, decode_run};
use super::schema::{
    DUE, EVENTS, JOBS, KEY_NEXT_EVENT, KEY_PAUSE_ALL, META, NAMES, OWNERS, PAUSE_TIMERS,
    QUEUE_JOBS, QUEUES, QueueRecord, RUNS, SETTINGS, SOURCES, STATES, count_key, owned_key,
    state_code, waiting_key,
};
use super::table::{KvTxn, Source, Tbl};
use crate::job::{Job, Run};
use chime_proto::{EventRecord, JobId, JobRef, JobState, RunId};
use redb::{ReadTransaction, TableDefinition};

/// Which jobs a listing wants.
#[derive(Debug, Clone)]
pub struct JobFilter {
    /// Only this owner's jobs (`None`: everyone's, for root).
    pub owner: Option<u32>,
    pub state: Option<JobState>,
    pub queue: Option<String>,
    /// Only jobs whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only ids greater than this.
    pub after: Option<JobId>,
    pub limit: usize,
    /// Most bytes of stored jobs in one page (at least one job): a page of large jobs (a
    /// command and environment may take 256 KiB) is cut short rather than built past a reply's
    /// size, and its `next` says where to go on.
    pub max_bytes: usize,
    /// Runs waiting in the runner for a slot, per job: a job whose open runs all wait there is
    /// listed as `queued` (see [`Job::shown`]).
    pub waiting: std::sync::Arc<crate::job::Waiting>,
}

/// The bytes of stored jobs one page of a listing may hold when nothing else is said.
pub const PAGE_BYTES: usize = 4 << 20;

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            owner: None,
            state: None,
            queue: None,
            name_prefix: None,
            after: None,
            limit: 0,
            max_bytes: PAGE_BYTES,
            waiting: Default::default(),
        }
    }
}

impl JobFilter {
    /// Whether the filter wants `job` (the index a listing reads checks one condition at most).
    fn wants(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| s == job.shown(&self.waiting))
            && self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && self
                .name_prefix
                .as_ref()
                .is_none_or(|p| job.name.as_ref().is_some_and(|n| n.starts_with(p.as_str())))
    }

    /// Whether the filter wants damaged records: a damaged job has no state, queue or name to
    /// check, so they are listed without a filter but the owner, or with the state `damaged`.
    fn wants_damaged(&self) -> bool {
        self.state.is_none_or(|s| s == JobState::Damaged)
            && self.queue.is_none()
            && self.name_prefix.is_none()
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Jobs whose record is damaged, with their owner by the `owners` index: listed (without a
    /// filter but the owner, or with the state `damaged`) rather than failing the listing.
    pub damaged: Vec<(JobId, Option<u32>, Damage)>,
    /// Where the next page starts; `None` when there are no more jobs.
    pub next: Option<JobId>,
}

/// A snapshot of the database.
pub struct Reader {
    txn: ReadTxn,
}

/// A snapshot of one backend.
pub(super) enum ReadTxn {
    Redb(ReadTransaction),
    Kv(Box<KvTxn<'static>>),
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
    pub(super) fn new(txn: ReadTxn) -> Result<Self, StoreError> {
        Ok(Self { txn })
    }

    /// The table `def` names, in this snapshot.
    pub(super) fn table<K: redb::Key + super::table::Column, V: super::table::Column>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<Tbl<'_, K, V>, StoreError> {
        match &self.txn {
            ReadTxn::Redb(txn) => Source::RedbRead(txn).open(def),
            ReadTxn::Kv(kv) => Source::Kv(&**kv).open(def),
        }
    }

    fn jobs(&self) -> Result<Tbl<'_, u64, &'static [u8]>, StoreError> {
        self.table(JOBS)
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.jobs()?
            .get_with(id.0, |bytes| decode_job(id.0, bytes))?
            .transpose()
    }

    /// The job `caller` means by `job` (a name is looked up as [`resolve_name`] says).
    pub fn job_by_ref(&self, caller: u32, job: &JobRef) -> Result<Found, StoreError> {
        let (id, name) = match job {
            JobRef::Id(id) => (*id, None),
            JobRef::Name(name) => match resolve_name(&self.table(NAMES)?, caller, name)? {
                Named::Job(id) => (id, Some(name.as_str())),
                Named::Missing => return Ok(Found::Missing),
                Named::Ambiguous(all) => return Ok(Found::Ambiguous(all)),
            },
        };
        Found::of(self.job(id), id, name, || self.owns(caller, id))
    }

    /// The owner of job `id` by the `owners` index, which is keyed by owner: a scan, for a job
    /// whose record cannot say (a damaged one).
    fn owner_of(&self, id: JobId) -> Result<Option<u32>, StoreError> {
        for entry in self.table(OWNERS)?.iter()? {
            let ((uid, job), ()) = entry?;
            if job == id.0 {
                return Ok(Some(uid));
            }
        }
        Ok(None)
    }

    /// Whether the `owners` index holds job `id` for `uid` (root owns everything).
    pub fn owns(&self, uid: u32, id: JobId) -> Result<bool, StoreError> {
        Ok(uid == 0 || self.table(OWNERS)?.get((uid, id.0))?.is_some())
    }

    /// Jobs stored for `uid`, finished ones included.
    pub fn owned_count(&self, uid: u32) -> Result<u64, StoreError> {
        Ok(self.table(META)?.get(owned_key(uid).as_str())?.unwrap_or(0))
    }

    /// A job's runs, oldest first. A damaged run record is left out (and logged): the job's
    /// other runs are still shown.
    pub fn runs(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        let table = self.table(RUNS)?;
        let mut out = Vec::new();
        for entry in table.range((job.0, 0)..=(job.0, u64::MAX))? {
            let (key, value) = entry?;
            match decode_run(key, &value) {
                Ok(run) => out.push(run),
                Err(StoreError::Corrupt(damage)) => {
                    tracing::error!(job_id = job.0, %damage, "a damaged run record was left out");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// One run of a job.
    pub fn run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError> {
        let table = self.table(RUNS)?;
        table
            .get_with((job.0, run.0), |value| decode_run((job.0, run.0), value))?
            .transpose()
    }

    /// A job's latest run.
    pub fn last_run(&self, job: JobId) -> Result<Option<Run>, StoreError> {
        let table = self.table(RUNS)?;
        match table.last_in((job.0, 0)..=(job.0, u64::MAX))? {
            Some((key, value)) => decode_run(key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// The oldest retained and the newest event's sequence numbers (0 when there is none).
    /// Runs in progress per fleet host, as the jobs record them (`None`: redb's one host).
    pub fn running_by_host(
        &self,
    ) -> Result<std::collections::BTreeMap<Option<String>, u64>, StoreError> {
        let code = state_code(JobState::Running);
        let mut out = std::collections::BTreeMap::new();
        for entry in self.table(STATES)?.range((code, 0)..=(code, u64::MAX))? {
            let ((_, id), ()) = entry?;
            if let Ok(Some(job)) = self.job(JobId(id)) {
                for run in job.state.runs() {
                    *out.entry(run.host.as_deref().map(str::to_owned))
                        .or_default() += 1;
                }
            }
        }
        Ok(out)
    }

    pub fn event_bounds(&self) -> Result<(u64, u64), StoreError> {
        let events = self.table(EVENTS)?;
        let head = self
            .table(META)?
            .get(KEY_NEXT_EVENT)?
            .unwrap_or(1)
            .saturating_sub(1);
        let oldest = events.first()?.map_or(0, |(k, _)| k);
        Ok((oldest, head))
    }

    /// Up to `limit` events with a sequence number above `after`, oldest first, optionally only
    /// those of `job`. Examines at most `limit` * 16 events, so that a filter that matches little
    /// cannot make one call scan the whole log; returns the last sequence number examined too.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
        job: Option<chime_proto::JobId>,
    ) -> Result<(Vec<EventRecord>, u64), StoreError> {
        let events = self.table(EVENTS)?;
        let mut out = Vec::new();
        let mut last = after;
        let budget = limit.saturating_mul(16);
        for (examined, entry) in events.range(after.saturating_add(1)..)?.enumerate() {
            if out.len() >= limit || examined >= budget {
                break;
            }
            let (key, value) = entry?;
            last = key;
            let record = match decode_event(key, &value) {
                Ok(record) => record,
                // Left out (and logged): the events around it are still served.
                Err(StoreError::Corrupt(damage)) => {
                    tracing::error!(%damage, "a damaged event was left out");
                    continue;
                }
                Err(err) => return Err(err),
            };
            if job.is_none_or(|j| record.job == Some(j)) {
                out.push(record);
            }
        }
        Ok((out, last))
    }

    /// Queues with waiting jobs, and how many wait in each.
    pub fn waiting_queues(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let meta = self.table(META)?;
        let mut out = Vec::new();
        for entry in meta.range("waiting."..="waiting.\u{10ffff}")? {
            let (key, value) = entry?;
            let queue = key.trim_start_matches("waiting.").to_owned();
            out.push((queue, value));
        }
        Ok(out)
    }

    /// Jobs declared by job files (for `status`).
    pub fn declared_count(&self) -> Result<u64, StoreError> {
        self.table(SOURCES)?.len()
    }

    /// Jobs by state, for `status`, every state.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let meta = self.table(META)?;
        let mut out = Vec::new();
        for state in JobState::ALL {
            out.push((state, meta.get(count_key(state))?.unwrap_or(0)));
        }
        Ok(out)
    }

    /// How many jobs wait in `queue`.
    pub fn waiting_count(&self, queue: &str) -> Result<u64, StoreError> {
        let meta = self.table(META)?;
        Ok(meta.get(waiting_key(queue).as_str())?.unwrap_or(0))
    }

    /// The earliest due time in the timer index.
    pub fn first_due(&self) -> Result<Option<i64>, StoreError> {
        let due = self.table(DUE)?;
        Ok(due.first()?.map(|((due, _), ())| due))
    }

    /// When the earliest timed pause ends.
    pub fn first_pause_end(&self) -> Result<Option<i64>, StoreError> {
        let timers = self.table(PAUSE_TIMERS)?;
        Ok(timers.first()?.map(|((until, _), ())| until))
    }

    /// Every stored queue record.
    pub fn queues(&self) -> Result<Vec<(String, QueueRecord)>, StoreError> {
        let table = self.table(QUEUES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            let record = postcard::from_bytes(&value).map_err(|err| {
                StoreError::Corrupt(Damage::new(
                    "queues",
                    &name,
                    format!("it does not decode: {err}"),
                ))
            })?;
            out.push((name, record));
        }
        Ok(out)
    }

    /// The names of queues that have jobs (one index seek per queue).
    pub fn queues_with_jobs(&self) -> Result<Vec<String>, StoreError> {
        let table = self.table(QUEUE_JOBS)?;
        let mut out: Vec<String> = Vec::new();
        let mut from = String::new();
        loop {
            let next = table.range((from.as_str(), 0)..)?.next();
            let Some(entry) = next else { break };
            let ((queue, _), ()) = entry?;
            // The smallest string greater than every key of this queue.
            from = format!("{queue}\0");
            out.push(queue);
            if out.len() > 100_000 {
                break;
            }
        }
        Ok(out)
    }

    /// The pause of everything.
    pub fn pause_all(&self) -> Result<Option<crate::job::PauseInfo>, StoreError> {
        let table = self.table(SETTINGS)?;
        match table.get(KEY_PAUSE_ALL)? {
            Some(value) => postcard::from_bytes(&value).map(Some).map_err(|err| {
                StoreError::Corrupt(Damage::new(
                    "settings",
                    KEY_PAUSE_ALL,
                    format!("it does not decode: {err}"),
                ))
            }),
            None => Ok(None),
        }
    }

    /// A page of jobs in id order, through the index that fits the filter best; the other
    /// conditions are checked on each job.
    pub fn list(&self, filter: &JobFilter) -> Result<Page, StoreError> {
        let start = filter.after.map_or(0, |id| id.0.saturating_add(1));
        let candidates = self.candidates(filter, start)?;
        self.fill_page(filter, candidates)
    }

    /// The ids a listing examines, from `start` on, in order: those of the index that fits the
    /// filter best (the owner's, the queue's or the state's jobs), else every job.
    fn candidates(&self, filter: &JobFilter, start: u64) -> Result<Ids<'_>, StoreError> {
        Ok(match (filter.owner, &filter.queue, filter.state) {
            // No filter, or the state `damaged` (damage is found by reading records): every job
            // is a candidate.
            (None, None, Some(JobState::Damaged)) | (None, None, None) => {
                Box::new(self.jobs()?.into_range(start..)?.map(|e| e.map(|(k, _)| k)))
            }
            (Some(owner), _, _) => Box::new(
                self.table(OWNERS)?
                    .into_range((owner, start)..=(owner, u64::MAX))?
                    .map(|e| e.map(|((_, id), ())| id)),
            ),
            (None, Some(queue), _) => Box::new(
                self.table(QUEUE_JOBS)?
                    .into_range((queue.as_str(), start)..=(queue.as_str(), u64::MAX))?
                    .map(|e| e.map(|((_, id), ())| id)),
            ),
            (None, None, Some(state)) => {
                let code = state_code(state);
                let indexed = self
                    .table(STATES)?
                    .into_range((code, start)..=(code, u64::MAX))?
                    .map(|e| e.map(|((_, id), ())| id));
                // Jobs shown as queued also include running ones whose runs all wait in the
                // runner; they are few (runs opened ahead), merged in id order.
                let mut extra: Vec<u64> = match state {
                    JobState::Queued => filter
                        .waiting
                        .keys()
                        .map(|id| id.0)
                        .filter(|id| *id >= start)
                        .collect(),
                    _ => Vec::new(),
                };
                extra.sort_unstable();
                Box::new(merge_ids(indexed, extra))
            }
        })
    }

    /// Reads the candidates' records in order and keeps the jobs the filter wants (and the
    /// damaged records, when it wants those), until the page is full, [`SCAN_BUDGET`] entries
    /// beyond it were examined, or `max_bytes` of jobs were kept.
    fn fill_page(&self, filter: &JobFilter, mut candidates: Ids<'_>) -> Result<Page, StoreError> {
        let limit = filter.limit.max(1);
        let jobs = self.jobs()?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let damaged_wanted = filter.wants_damaged();
        let mut bytes_out = 0usize;
        let mut scanned = 0usize;
        let mut last = None;
        let mut stopped_early = false;
        while let Some(id) = candidates.next().transpose()? {
            scanned += 1;
            last = Some(id);
            let Some((decoded, length)) =
                jobs.get_with(id, |bytes| (decode_job(id, bytes), bytes.len()))?
            else {
                continue;
            };
            let job = match decoded {
                Ok(job) => job,
                Err(StoreError::Corrupt(damage)) => {
                    if damaged_wanted {
                        let owner = match filter.owner {
                            Some(owner) => Some(owner),
                            None => self.owner_of(JobId(id))?,
                        };
                        damaged.push((JobId(id), owner, damage));
                        if out.len() + damaged.len() == limit {
                            stopped_early = true;
                            break;
                        }
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            if filter.wants(&job) {
                bytes_out += length;
                out.push(job);
            }
            if out.len() + damaged.len() == limit
                || scanned >= limit + SCAN_BUDGET
                || bytes_out >= filter.max_bytes.max(1)
            {
                stopped_early = true;
                break;
            }
        }
        let more = stopped_early && candidates.next().is_some();
        Ok(Page {
            next: if more { last.map(JobId) } else { None },
            jobs: out,
            damaged,
        })
    }
}

/// Job ids in ascending order, as a listing reads them from an index.
type Ids<'r> = Box<dyn Iterator<Item = Result<u64, StoreError>> + 'r>;

/// Merges ids from an index (ascending) with a few more (ascending), in order, once each.
fn merge_ids<'a>(
    indexed: impl Iterator<Item = Result<u64, StoreError>> + 'a,
    extra: Vec<u64>,
) -> impl Iterator<Item = Result<u64, StoreError>> + 'a {
    let mut indexed = indexed.peekable();
    let mut extra = extra.into_iter().peekable();
    std::iter::from_fn(move || match (indexed.peek(), extra.peek()) {
        (Some(Ok(a)), Some(b)) if *b < *a => extra.next().map(Ok),
        (Some(Ok(a)), Some(b)) if *b == *a => {
            extra.next();
            indexed.next()
        }
        (Some(_), _) => indexed.next(),
        (None, _) => extra.next().map(Ok),
    })
}
