//! `add`: check a job spec ([`crate::spec`]), that this host can enforce its resource limits,
//! its paths as the submitter, then have the engine store it (or replace a named one).

use super::Peer;
use crate::context::Context;
use crate::engine::batch::Work;
use crate::job::now_ms;
use crate::spec;
use chime_proto::{ErrorCode, ErrorReply, Response, SubmitJob};
use std::sync::Arc;

/// A submission: checked here, then stored by the engine.
pub async fn handle(
    context: &Arc<Context>,
    peer: &Peer,
    submit: SubmitJob,
) -> Result<Response, ErrorReply> {
    let SubmitJob { job, exec, journal } = submit;
    let (uid, daemon_uid) = (peer.uid, context.info.uid);
    let Some(user) = peer.user.clone() else {
        return Err(ErrorReply::new(
            ErrorCode::PermissionDenied,
            format!("uid {uid} has no account on this host, so no job can run as it"),
        ));
    };
    if daemon_uid != 0 && uid != daemon_uid {
        return Err(ErrorReply::new(
            ErrorCode::PermissionDenied,
            format!(
                "this chimed runs as uid {daemon_uid} and can only run jobs for that user; use your own chimed or the system one"
            ),
        ));
    }
    let limits = context.limits.get();
    let bounds = (!limits.is_exempt(uid)).then_some(&*limits);
    let local = &context.info.local_tz;
    spec::check(&job, local, &limits)?;
    let mut exec = spec::resolve_exec(&exec, &context.exec_defaults(), bounds)?;
    // The job's own limits; `[defaults]`' were checked when the configuration was loaded.
    spec::check_host(&exec.limits, &context.controllers)?;
    exec.journal |= journal;
    // Whether anything would run, as of now (the engine resolves again when it stores the job).
    spec::resolve(&job, exec.clone(), now_ms(), local)?;
    // The directory and the program, seen with the submitter's eyes.
    let (program, path) = spec::paths_to_check(&job);
    context
        .checked
        .check(
            (&context.info.helper, daemon_uid),
            uid,
            &job.cwd,
            program,
            path,
        )
        .await?;
    context
        .engine
        .request(Work::Submit {
            uid,
            user,
            job: Box::new(job),
            exec: Box::new(exec),
        })
        .await
}
