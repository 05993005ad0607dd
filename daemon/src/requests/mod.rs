//! One file per request: how each is checked and answered.
//!
//! Changes (`submit`, `cancel`, `pause`, ...) are checked here for everything that does not need
//! the database, then sent to the engine, which commits them before it answers. Queries (`ls`,
//! `show`, `logs`, `status`, `next`, `queue ls`) read a redb snapshot on a blocking thread and
//! never wait for the engine.
//!
//! Handlers see only the current protocol's types: a request of an older client was upgraded
//! before it got here, and a reply is downgraded for it after (both in `chime_proto::compat`).

mod add;
mod cancel;
mod control;
mod edit;
mod list;
mod logs;
mod next;
mod pause;
mod queues;
mod show;
mod status;
mod waits;

use crate::context::Context;
use crate::job::Job;
use crate::store::StoreError;
use chime_proto::{ErrorCode, ErrorReply, Request, Response};
use std::sync::Arc;

/// Who is asking: the connection's uid from `SO_PEERCRED`, and that uid's account name (read once
/// per connection; `None` when the uid has no account here).
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub user: Option<String>,
}

impl Peer {
    /// Looks up the account of `uid` (NSS: it may block).
    pub fn of(uid: u32) -> Self {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        Self { uid, user }
    }
}

/// Answers one request from `peer`.
pub async fn handle(
    context: &Arc<Context>,
    peer: &Peer,
    mut request: Request,
) -> Result<Response, ErrorReply> {
    let uid = peer.uid;
    let asked = owner_by_uid(&mut request).await;
    if is_change(&request) {
        pace(context, uid).await;
    }
    // A user's queries take their turn: each may read a lot (a run's whole output).
    let _turn = match is_query(&request) {
        true => {
            let limits = context.limits.get();
            match limits.is_exempt(uid) {
                true => None,
                false => Some(context.queries.take(uid, limits.queries_per_user).await),
            }
        }
        false => None,
    };
    let response = match request {
        Request::Submit(submit) => add::handle(context, peer, *submit).await,
        Request::List(query) => list::handle(context, uid, query).await,
        Request::Show(job) => show::handle(context, uid, job).await,
        Request::Cancel(job) => cancel::handle(context, uid, job).await,
        Request::Status => status::handle(context).await,
        Request::Logs(query) => logs::handle(context, uid, query).await,
        Request::Next(query) => next::handle(context, uid, query).await,
        Request::Pause(pause) => pause::pause(context, uid, pause).await,
        Request::Resume(target) => pause::resume(context, uid, target).await,
        Request::Skip(job) => pause::skip(context, uid, job).await,
        Request::Trigger(job) => pause::trigger(context, uid, job).await,
        Request::SetQueue(settings) => queues::set(context, uid, settings).await,
        Request::Queues => queues::list(context).await,
        Request::Wait(query) => control::wait(context, uid, query).await,
        Request::Kill(kill) => control::kill(context, uid, kill).await,
        Request::Retry(job) => control::retry(context, uid, job).await,
        Request::Remove(job) => control::remove(context, uid, job).await,
        Request::JobFile(job) => edit::file(context, uid, job).await,
        Request::Edit(edited) => edit::apply(context, peer, edited).await,
        Request::Metrics => {
            query(context, |context| {
                Ok(Response::Metrics(context.render_metrics()?))
            })
            .await
        }
        Request::Reload => {
            if uid != 0 && uid != context.info.uid {
                return Err(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    "only root (or chimed's own user) may reload the configuration",
                ));
            }
            Ok(Response::Reloaded(
                crate::reload::reload(context, Some(uid)).await,
            ))
        }
        // The connection streams a watch itself (see crate::watch).
        Request::Watch(_) => Err(ErrorReply::new(
            ErrorCode::BadRequest,
            "a watch cannot be pipelined with other requests",
        )),
    };
    match (response, asked) {
        // Said about the name as the user gave it, not the uid it stood for.
        (Err(refusal), Some(asked)) if refusal.code == ErrorCode::NotFound => {
            Err(crate::access::not_found(&asked))
        }
        (response, _) => response,
    }
}

/// Whether a request asks for a change (and so for a commit): what `changes_per_second` paces.
pub fn is_change(request: &Request) -> bool {
    matches!(
        request,
        Request::Submit(_)
            | Request::Edit(_)
            | Request::Cancel(_)
            | Request::Pause(_)
            | Request::Resume(_)
            | Request::Skip(_)
            | Request::Trigger(_)
            | Request::SetQueue(_)
            | Request::Kill(_)
            | Request::Retry(_)
            | Request::Remove(_)
            | Request::Reload
    )
}

/// The job a request that goes to the engine names, if any.
fn engine_job_ref(request: &mut Request) -> Option<&mut chime_proto::JobRef> {
    use chime_proto::PauseTarget;
    match request {
        Request::Cancel(job)
        | Request::Skip(job)
        | Request::Trigger(job)
        | Request::Retry(job)
        | Request::Remove(job) => Some(job),
        Request::Wait(query) => Some(&mut query.job),
        Request::Kill(kill) => Some(&mut kill.job),
        Request::Pause(chime_proto::PauseRequest {
            target: PauseTarget::Job(job),
            ..
        })
        | Request::Resume(PauseTarget::Job(job)) => Some(job),
        _ => None,
    }
}

/// Rewrites `USER/NAME` as `UID/NAME` in a request for the engine, looking the user up here (NSS
/// may block, on LDAP say) rather than on the engine thread, which everyone's changes wait for.
/// An unknown user becomes a uid no one has, so the name is not found. Returns the name as asked
/// for, for the refusal (which must not show the uid).
async fn owner_by_uid(request: &mut Request) -> Option<chime_proto::JobRef> {
    let Some(chime_proto::JobRef::Name(name)) = engine_job_ref(request) else {
        return None;
    };
    let (user, rest) = name.split_once('/')?;
    let rest = rest.to_owned();
    if user.parse::<u32>().is_ok() {
        return None;
    }
    let asked = chime_proto::JobRef::Name(name.clone());
    let user = user.to_owned();
    let uid = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_name(&user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(u32::MAX);
    *name = format!("{uid}/{rest}");
    Some(asked)
}

/// Whether a request only reads (on a blocking thread): what `queries_per_user` bounds.
fn is_query(request: &Request) -> bool {
    matches!(
        request,
        Request::List(_)
            | Request::Show(_)
            | Request::Logs(_)
            | Request::Next(_)
            | Request::Status
            | Request::Queues
            | Request::Metrics
            | Request::JobFile(_)
    )
}

/// Waits for `uid`'s turn to change something (see [`crate::limits::Pace`]); administrators do
/// not wait.
async fn pace(context: &Context, uid: u32) {
    let limits = context.limits.get();
    if limits.is_exempt(uid) {
        return;
    }
    let wait = context
        .pace
        .reserve(uid, limits.changes_per_second, std::time::Instant::now());
    if !wait.is_zero() {
        tracing::debug!(
            uid,
            wait_ms = wait.as_millis() as u64,
            "a user's change waits its turn (changes_per_second)"
        );
        tokio::time::sleep(wait).await;
    }
}

/// Runs a read-only query on a blocking thread.
async fn query<T: Send + 'static>(
    context: &Arc<Context>,
    f: impl FnOnce(&Context) -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    let context = Arc::clone(context);
    tokio::task::spawn_blocking(move || f(&context))
        .await
        .unwrap_or_else(|err| Err(internal(format!("query failed: {err}"))))
}

fn internal(message: impl std::fmt::Display) -> ErrorReply {
    tracing::error!(error = %message, "request failed inside chimed");
    ErrorReply::new(
        ErrorCode::Internal,
        format!("chimed failed: {message} (see its log)"),
    )
}

fn bad(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

impl From<StoreError> for ErrorReply {
    fn from(err: StoreError) -> Self {
        internal(err)
    }
}

/// Jobs stored as running whose open runs all wait in the runner for a slot: users are shown
/// them as queued ([`Job::shown`]). Call after taking `reader`'s snapshot, so that a run that
/// started since shows as running.
pub fn held_back(context: &Context, reader: &crate::store::Reader) -> Result<Vec<Job>, StoreError> {
    let waiting = context.runs.waiting();
    let mut out = Vec::new();
    for id in waiting.keys() {
        if let Some(job) = reader.job(*id)?
            && job.kind() == chime_proto::JobState::Running
            && job.shown(&waiting) == chime_proto::JobState::Queued
        {
            out.push(job);
        }
    }
    Ok(out)
}
