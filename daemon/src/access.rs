//! Who may see and change a job: its owner and root. A refusal about someone else's job is the
//! same as about a job that does not exist, so that it reveals neither the job nor its owner.
//! Used by the engine's batches and by the requests that read.

use crate::job::Job;
use crate::store::Found;
use chime_proto::{ErrorCode, ErrorReply, JobRef};

pub fn not_found(job: &JobRef) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotFound,
        format!("no {job}; `chimectl ls` lists your jobs"),
    )
}

/// [`owned_job`], looked up through `reader` (`database`: its path, for the remedy of damage).
pub fn read_owned_job(
    reader: &crate::store::Reader,
    uid: u32,
    job: &JobRef,
    database: &std::path::Path,
) -> Result<Job, ErrorReply> {
    owned_job(uid, job, reader.job_by_ref(uid, job)?, database)
}

/// The job `uid` asked for as `job`, if they may see it: only its owner and root may (see
/// [`check_owner`]). A name several users use is ambiguous only to root, who is told how to say
/// which one.
pub fn owned_job(
    uid: u32,
    job: &JobRef,
    found: Found,
    database: &std::path::Path,
) -> Result<Job, ErrorReply> {
    match found {
        Found::Job(found) => check_owner(uid, &found).map(|()| found),
        Found::Missing | Found::Damaged { theirs: false, .. } => Err(not_found(job)),
        Found::Damaged { id, damage, .. } => Err(ErrorReply::new(
            ErrorCode::Damaged,
            damage.explain(database, id),
        )),
        Found::Ambiguous(all) => {
            let name = match job {
                JobRef::Name(name) => name.as_str(),
                JobRef::Id(_) => "",
            };
            let each: Vec<String> = all
                .iter()
                .map(|(owner, id)| {
                    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*owner))
                        .ok()
                        .flatten()
                        .map_or_else(|| owner.to_string(), |u| u.name);
                    format!("{user}/{name} (job {id})")
                })
                .collect();
            Err(ErrorReply::new(
                ErrorCode::Conflict,
                format!(
                    "several users have a job named {name:?}: {}; give the job's id or USER/NAME",
                    each.join(", ")
                ),
            ))
        }
    }
}

/// Only the owner and root may see or change a job. Anyone else is told what they would be told
/// of a job that does not exist, so that a refusal reveals neither the job nor its owner.
pub fn check_owner(uid: u32, job: &Job) -> Result<(), ErrorReply> {
    if uid == 0 || uid == job.owner {
        Ok(())
    } else {
        Err(not_found(&JobRef::Id(job.id)))
    }
}

/// The refusal of a change a user asks of a job that a job file declares: the file is where it
/// changes.
pub fn declared(job: &Job, source: &str) -> ErrorReply {
    let which = match &job.name {
        Some(name) => format!("job {name:?}"),
        None => format!("job {}", job.id),
    };
    ErrorReply::new(
        ErrorCode::Conflict,
        format!("{which} is declared in {source}: edit that file and run `chimectl reload`"),
    )
}
