//! `edit`: a job's spec as a job file ([`crate::config::jobs::render`]), and the edited file
//! back: checked by the job-file parser ([`crate::config::jobs::parse_edit`], so its refusals
//! are a job file's, `NAME.toml:LINE: field: what`), its paths as the job's owner, then swapped
//! in by the engine as `add --replace` swaps a spec.

use super::{Peer, bad, query};
use crate::access::{declared, read_owned_job};
use crate::config::LoadContext;
use crate::config::jobs::{Editing, parse_edit, render::render};
use crate::context::Context;
use crate::engine::batch::Work;
use crate::job::{Job, now_ms};
use crate::machine::Spec;
use chime_proto::request::limits::JOB_FILE_TEXT_MAX;
use chime_proto::{EditJob, ErrorCode, ErrorReply, JobFile, JobRef, Response};
use std::sync::Arc;

/// The job `uid` asked for, if they may edit it: theirs (or root's to edit) and not declared by
/// a job file.
fn editable(context: &Context, uid: u32, job: &JobRef) -> Result<Job, ErrorReply> {
    let reader = context.store.read()?;
    let found = read_owned_job(&reader, uid, job, context.store.path())?;
    if let Some(source) = found.source_path() {
        return Err(declared(&found, source));
    }
    Ok(found)
}

/// What the job file is called in refusals: the job's name, else its id.
fn file_name(job: &Job) -> String {
    match &job.name {
        Some(name) => format!("{name}.toml"),
        None => format!("{}.toml", job.id),
    }
}

fn load_context(context: &Context) -> LoadContext {
    LoadContext {
        daemon_uid: context.info.uid,
        local_tz: context.info.local_tz.clone(),
        exec_defaults: context.exec_defaults(),
        controllers: context.controllers,
        limits: (*context.limits.get()).clone(),
    }
}

/// Who edits `job` (`uid`), and the limits they are held to (none for root and chimed's user).
fn editing<'a>(uid: u32, job: &'a Job, limits: &'a crate::limits::Limits) -> Editing<'a> {
    Editing {
        uid,
        name: job.name.as_deref(),
        owner: job.owner,
        owner_name: &job.owner_name,
        bounds: (!limits.is_exempt(uid)).then_some(limits),
    }
}

/// The job's spec as a job file.
pub async fn file(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let found = editable(context, uid, &job)?;
        let limits = context.limits.get();
        let text = render(
            &found,
            &load_context(context),
            &editing(uid, &found, &limits),
        );
        Ok(Response::JobFile(JobFile {
            id: found.id,
            name: found.name.clone(),
            file_name: file_name(&found),
            revision: Spec::of(&found).revision(),
            text,
        }))
    })
    .await
}

/// Checks an edited job file and has the engine swap it in.
pub async fn apply(
    context: &Arc<Context>,
    peer: &Peer,
    edit: EditJob,
) -> Result<Response, ErrorReply> {
    let EditJob { id, revision, text } = edit;
    let uid = peer.uid;
    if text.len() > JOB_FILE_TEXT_MAX {
        return Err(bad(format!(
            "the edited file has {} bytes; at most {JOB_FILE_TEXT_MAX} are accepted",
            text.len()
        )));
    }
    let found = query(context, move |context| {
        editable(context, uid, &JobRef::Id(id))
    })
    .await?;
    let limits = context.limits.get();
    let editing = editing(uid, &found, &limits);
    let in_file =
        |e: crate::config::FileError| ErrorReply::new(ErrorCode::BadRequest, e.to_string());
    let edited = parse_edit(
        &file_name(&found),
        &text,
        &load_context(context),
        &editing,
        now_ms(),
    )
    .map_err(in_file)?;
    // The directory and the program, seen with the eyes of the job's owner, whom it runs as.
    let job = &edited.job;
    let (program, path) = crate::spec::paths_to_check(job);
    let checked = context
        .checked
        .check(
            (&context.info.helper, context.info.uid),
            found.owner,
            &job.cwd,
            program,
            path,
        )
        .await;
    checked.map_err(|refusal| match refusal.code {
        ErrorCode::BadRequest => in_file(edited.place(refusal)),
        _ => refusal,
    })?;
    context
        .engine
        .request(Work::Edit {
            uid,
            id,
            revision,
            job: Box::new(edited.job),
            exec: Box::new(edited.exec),
        })
        .await
}
