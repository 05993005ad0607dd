//! The writer's view of jobs: ids, lookups by id, name and owner, and the declared jobs. Writing
//! a job (and every index derived from it) is `store/index.rs`'s.

use super::Writer;
use crate::job::Job;
use crate::store::StoreError;
use crate::store::lookup::{Found, Named, resolve_name};
use crate::store::record::decode_job;
use crate::store::schema::owned_key;
use chime_proto::JobId;

impl Writer<'_> {
    /// Allocates a job id. Ids increase and are never reused: the counter is written on commit,
    /// so only an id that no one saw can be handed out again.
    pub fn allocate_job_id(&mut self) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        id
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.jobs
            .get_with(id.0, |bytes| decode_job(id.0, bytes))?
            .transpose()
    }

    /// The job `caller` means by `job`, or why there is none (see [`Found::of`]).
    pub fn find(&self, caller: u32, job: &chime_proto::JobRef) -> Result<Found, StoreError> {
        let (id, name) = match job {
            chime_proto::JobRef::Id(id) => (*id, None),
            chime_proto::JobRef::Name(name) => match resolve_name(&self.names, caller, name)? {
                Named::Job(id) => (id, Some(name.as_str())),
                Named::Missing => return Ok(Found::Missing),
                Named::Ambiguous(all) => return Ok(Found::Ambiguous(all)),
            },
        };
        Found::of(self.job(id), id, name, || self.owns(caller, id))
    }

    /// Whether the `owners` index holds job `id` for `uid` (root owns everything).
    pub fn owns(&self, uid: u32, id: JobId) -> Result<bool, StoreError> {
        Ok(uid == 0 || self.owners.get((uid, id.0))?.is_some())
    }

    /// The job of `owner` named `name`.
    pub fn job_id_by_name(&self, name: &str, owner: u32) -> Result<Option<JobId>, StoreError> {
        Ok(self.names.get((name, owner))?.map(JobId))
    }

    /// How `caller` names a job (see [`resolve_name`]).
    pub fn resolve_name(&self, caller: u32, name: &str) -> Result<Named, StoreError> {
        resolve_name(&self.names, caller, name)
    }

    /// Jobs stored for `uid`, finished ones included.
    pub fn owned_count(&self, uid: u32) -> Result<u64, StoreError> {
        let cached = self.owned_stored.borrow().get(&uid).copied();
        let stored = match cached {
            Some(stored) => stored,
            None => {
                // Read once per transaction (the counter is written at its end): a batch of
                // one user's submissions asks once, not once each.
                let stored = self.meta.get(owned_key(uid).as_str())?.unwrap_or(0);
                self.owned_stored.borrow_mut().insert(uid, stored);
                stored
            }
        };
        let pending = self.owned_delta.get(&uid).copied().unwrap_or(0);
        Ok(stored.saturating_add_signed(pending))
    }

    /// Jobs declared by job files: (file, job id), by file.
    pub fn declared_jobs(&self) -> Result<Vec<(String, JobId)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.sources.iter()? {
            let ((source, id), ()) = entry?;
            out.push((source, JobId(id)));
        }
        Ok(out)
    }
}
