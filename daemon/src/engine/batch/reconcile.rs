//! Reconciling declared jobs and queue limits with the configuration, in one transaction.
//!
//! A reload reads every job file (`crate::config`) and hands the engine what they declare. Here,
//! against the `sources` index (every job a file declared):
//!
//! - a file seen for the first time creates its job. Names are unique per owner, and a declared
//!   name is the administrator's: if the owner already has a job of that name added with
//!   chimectl, that job keeps running under its id but loses the name (an `updated` event and a
//!   warning say so), so that no user's job can keep a job file from applying or chimed from
//!   starting;
//! - a file whose declaration changed (its digest) updates its job in place: the spec is swapped
//!   as by `add --replace`, keeping the id, history and state;
//! - a file that is gone deletes its job (ending runs in progress);
//! - a file that was refused (it does not parse, or may not be trusted) leaves its job exactly
//!   as it was, and so does every file of a directory refused as a whole (`jobs.d` that others
//!   may write, see `crate::config::trust`).
//!
//! Jobs added with chimectl are never touched. Queue limits named in `chimed.toml` are set; a
//! queue that was named by the previous configuration and is no longer loses its limit.

use super::core::Batch;
use crate::config::Declared;
use crate::job::{Job, Ms, QueueLimits, Source};
use crate::machine::Spec;
use crate::store::StoreError;
use chime_proto::ReloadReport;
use chime_proto::{ErrorReply, EventKind, JobId, Response};
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};

/// The settings key of the queues whose limits the configuration file manages.
const MANAGED_QUEUES: &str = "config.queues";

/// What a reload asks the engine to apply.
#[derive(Debug, Clone)]
pub struct Reconcile {
    pub declared: Vec<Declared>,
    /// Job files, or directories of job files, that were refused: their jobs stay as they are.
    pub refused: Vec<String>,
    /// Queue limits from `chimed.toml` (`None`: the file could not be read; leave them).
    pub queues: Option<BTreeMap<String, QueueLimits>>,
    /// Who asked for the reload (`chimectl reload`); `None` when chimed started it (its start,
    /// SIGHUP).
    pub actor: Option<u32>,
}

impl Batch<'_, '_> {
    pub(super) fn reconcile(
        &mut self,
        plan: Reconcile,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let mut report = ReloadReport::default();
        let existing = self.w.declared_jobs()?;
        let by_path: HashMap<&str, JobId> =
            existing.iter().map(|(p, id)| (p.as_str(), *id)).collect();
        for d in &plan.declared {
            self.apply_declared(d, &by_path, &mut report)?;
        }
        self.remove_undeclared(&existing, &plan, &mut report)?;
        if let Some(queues) = plan.queues {
            self.set_managed_limits(&queues)?;
        }
        self.out.changes += 1;
        Ok(Ok(Response::Reloaded(report)))
    }

    /// Brings the job one file declares in line with it: creates it, updates it, or leaves it
    /// (unchanged, or refused: a spec that does not resolve, a damaged job).
    fn apply_declared(
        &mut self,
        d: &Declared,
        by_path: &HashMap<&str, JobId>,
        report: &mut ReloadReport,
    ) -> Result<(), StoreError> {
        let source = Source {
            path: d.path.clone(),
            digest: d.digest.clone(),
        };
        // A damaged job is left as it is (quarantined): the file is refused until the job
        // is removed or the database restored.
        let known = match by_path.get(d.path.as_str()) {
            Some(id) => Some(*id),
            None => self.w.job_id_by_name(&d.name, d.owner)?,
        };
        if let Some(id) = known
            && let Err(StoreError::Corrupt(damage)) = self.w.job(id)
        {
            let refusal = self.damaged(Some(id), damage)?;
            report
                .errors
                .push(format!("{}: {}", d.path, refusal.message));
            return Ok(());
        }
        let by_file = match by_path.get(d.path.as_str()) {
            Some(id) => self.w.job(*id)?,
            None => None,
        };
        if let Some(job) = &by_file
            && job.source.as_ref() == Some(&source)
            && job.owner == d.owner
            && job.owner_name == d.owner_name
        {
            // Applied before: left as it is, even when its time has run out since (an `until`
            // now past), so that a job which ended never stops chimed from starting.
            report.unchanged += 1;
            return Ok(());
        }
        let current = match by_file {
            Some(job) => Some(job),
            None if by_path.contains_key(d.path.as_str()) => None,
            None => self.declared_elsewhere(d)?,
        };
        match current {
            // Changed: applied even when its time has run out (the job then ends), so that a
            // change elsewhere ([defaults], the owner's name) never turns it into an error.
            Some(job) => {
                let spec = match crate::spec::machine_spec(
                    &d.job,
                    d.exec.clone(),
                    self.now,
                    &self.env.local_tz,
                ) {
                    Ok((spec, _)) => spec,
                    Err(refusal) => {
                        report.errors.push(format!("{}: {refusal}", d.path));
                        return Ok(());
                    }
                };
                if let Some(stale) = &d.stale {
                    report.warnings.push(format!(
                        "{stale}; the job was updated and has nothing left to run"
                    ));
                }
                self.update_declared(d, &job, spec, source, report)?;
            }
            // New: added only when something would run; else it is a warning, not an error, so
            // that an old file (restored from a backup, say) never stops chimed's start.
            None => {
                match crate::spec::resolve(&d.job, d.exec.clone(), self.now, &self.env.local_tz) {
                    Ok((spec, first_due)) => {
                        self.take_name(d)?;
                        self.add_declared(d, spec, first_due, source, report)?;
                    }
                    Err(refusal) => {
                        let said = d
                            .stale
                            .as_ref()
                            .map_or_else(|| format!("{}: {refusal}", d.path), ToString::to_string);
                        report.warnings.push(format!("{said}; no job was added"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The job a file not seen before declares, when another file declared it (the
    /// configuration moved): found by its owner and name, and adopted.
    fn declared_elsewhere(&mut self, d: &Declared) -> Result<Option<Job>, StoreError> {
        let Some(id) = self.w.job_id_by_name(&d.name, d.owner)? else {
            return Ok(None);
        };
        let job = self.w.job(id)?.expect("the name index points at a job");
        Ok(job.source.is_some().then_some(job))
    }

    /// Gives a new declared job its name: a job of that name added with chimectl gives the name
    /// up and keeps its id.
    fn take_name(&mut self, d: &Declared) -> Result<(), StoreError> {
        let Some(id) = self.w.job_id_by_name(&d.name, d.owner)? else {
            return Ok(());
        };
        let job = self.w.job(id)?.expect("the name index points at a job");
        let mut unnamed = job.clone();
        unnamed.name = None;
        self.w.put_job(Some(&job), &unnamed)?;
        tracing::warn!(job_id = id.0, job_name = %d.name, owner_uid = d.owner, file = %d.path, "a job added with chimectl had the name of a declared job; it keeps its id and loses the name");
        let kind = EventKind::Updated {
            next_due_ms: unnamed.state.due_ms(),
        };
        self.emit(Some(&unnamed), kind)
    }

    /// Creates the job a file declares.
    fn add_declared(
        &mut self,
        d: &Declared,
        spec: Spec,
        first_due: Ms,
        source: Source,
        report: &mut ReloadReport,
    ) -> Result<(), StoreError> {
        let job = self.new_job(
            d.owner,
            d.owner_name.clone(),
            Some(d.name.clone()),
            spec,
            first_due,
            Some(source),
        );
        tracing::info!(job_id = job.id.0, job_name = %d.name, file = %d.path, "declared job added");
        self.add(&job)?;
        report.added.push(d.name.clone());
        Ok(())
    }

    /// Updates a declared job whose file changed: its spec is swapped as by `add --replace`,
    /// and it takes the file's digest and owner.
    fn update_declared(
        &mut self,
        d: &Declared,
        job: &Job,
        spec: Spec,
        source: Source,
        report: &mut ReloadReport,
    ) -> Result<(), StoreError> {
        match self.replace(job, spec)? {
            Ok(after) => {
                let mut updated = after.clone();
                updated.source = Some(source);
                updated.owner = d.owner;
                updated.owner_name = d.owner_name.clone();
                self.w.put_job(Some(&after), &updated)?;
                tracing::info!(job_id = job.id.0, job_name = %d.name, file = %d.path, "declared job updated");
                report.updated.push(d.name.clone());
            }
            Err(refusal) => report.errors.push(format!("{}: {refusal}", d.path)),
        }
        Ok(())
    }

    /// Deletes the jobs whose files are gone (ending their runs), except those of files, or
    /// directories of files, that were refused.
    fn remove_undeclared(
        &mut self,
        existing: &[(String, JobId)],
        plan: &Reconcile,
        report: &mut ReloadReport,
    ) -> Result<(), StoreError> {
        let declared_paths: HashSet<&str> = plan.declared.iter().map(|d| d.path.as_str()).collect();
        let refused: HashSet<&str> = plan.refused.iter().map(String::as_str).collect();
        for (path, id) in existing {
            let dir_refused = std::path::Path::new(path)
                .parent()
                .and_then(std::path::Path::to_str)
                .is_some_and(|dir| refused.contains(dir));
            if declared_paths.contains(path.as_str())
                || refused.contains(path.as_str())
                || dir_refused
            {
                continue;
            }
            let Some(job) = self.load(*id)? else {
                continue;
            };
            for run in job.state.runs() {
                self.stop(run.host.as_deref(), run.run, None)?;
            }
            tracing::info!(job_id = id.0, file = %path, "job file removed; removing its job");
            self.delete(&job, "undeclared")?;
            report
                .removed
                .push(job.name.clone().unwrap_or_else(|| id.to_string()));
        }
        Ok(())
    }

    /// Sets the queue limits `chimed.toml` names, and lifts those of queues the previous
    /// configuration named and this one does not.
    fn set_managed_limits(
        &mut self,
        queues: &BTreeMap<String, QueueLimits>,
    ) -> Result<(), StoreError> {
        let before: Vec<String> = self
            .w
            .setting(MANAGED_QUEUES)?
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default();
        let mut limits: Vec<(String, QueueLimits)> =
            queues.iter().map(|(q, l)| (q.clone(), l.clone())).collect();
        for old in before {
            if !queues.contains_key(&old) {
                limits.push((old, QueueLimits::default()));
            }
        }
        for (name, wanted) in limits {
            let record = self.queue(&name)?;
            if record.parallel != wanted.parallel || record.limits != wanted.limits {
                self.set_limit(name, wanted)?;
            }
        }
        let managed: Vec<&String> = queues.keys().collect();
        self.w.set_setting(
            MANAGED_QUEUES,
            Some(&postcard::to_stdvec(&managed).expect("names encode")),
        )?;
        Ok(())
    }
}
