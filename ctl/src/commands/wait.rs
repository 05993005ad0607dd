//! `chimectl wait`, also used by `add --wait`.

use crate::client::Client;
use crate::output::{print_json, run_json};
use anyhow::{anyhow, bail};
use chime_proto::human::parse_duration;
use chime_proto::{JobRef, Outcome, Request, Response, WaitQuery};
use serde_json::json;
use std::process::ExitCode;

/// The exit status that stands for a run's outcome.
pub fn exit_status(outcome: Option<&Outcome>) -> u8 {
    match outcome {
        Some(Outcome::Exited(code)) => u8::try_from(*code).unwrap_or(1),
        Some(Outcome::Fired) => 0,
        Some(Outcome::TimedOut) => 124,
        Some(Outcome::SpawnError(_)) => 127,
        Some(Outcome::Signaled(_) | Outcome::OomKilled | Outcome::Lost | Outcome::Interrupted) => 1,
        // A finished job that never ran (cancelled, or every occurrence missed).
        None => 1,
    }
}

/// For a recurring job, says on stderr which run `wait` waits for: the one in progress, or the
/// next occurrence's. (A one-shot job has one run; nothing to say.)
pub async fn say_which_run(client: &mut Client, job: &str) {
    let Ok(Response::Job(detail)) = client.call(Request::Show(JobRef::parse(job))).await else {
        return;
    };
    let s = &detail.summary;
    if matches!(
        s.schedule_spec,
        chime_proto::ScheduleSpec::Now
            | chime_proto::ScheduleSpec::At(_)
            | chime_proto::ScheduleSpec::After(_)
    ) {
        return;
    }
    let tz = crate::output::local_tz();
    let open = detail.runs.iter().rev().find(|r| r.outcome.is_none());
    match (open, s.next_due_ms) {
        (Some(run), _) => eprintln!(
            "chimectl: waiting for run {} of job {} (attempt {}), in progress since {}",
            run.run,
            s.id,
            run.attempt,
            crate::output::when(Some(run.started_at_ms), &tz)
        ),
        (None, Some(next)) => eprintln!(
            "chimectl: waiting for the next run of job {}, due {}",
            s.id,
            crate::output::when(Some(next), &tz)
        ),
        (None, None) => {}
    }
}

/// Exit status when `--timeout` passed before the run ended.
const WAIT_TIMED_OUT: u8 = 75;

pub async fn wait(
    client: &mut Client,
    job: JobRef,
    since_ms: Option<i64>,
    timeout: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let timeout = timeout
        .map(|t| parse_duration(t).map_err(|e| anyhow!("--timeout: {e}")))
        .transpose()?;
    let call = client.call(Request::Wait(WaitQuery { job, since_ms }));
    let response = match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(response) => response?,
            Err(_) => {
                eprintln!("chimectl: the run had not ended after --timeout; it goes on");
                return Ok(ExitCode::from(WAIT_TIMED_OUT));
            }
        },
        None => call.await?,
    };
    let Response::Waited(waited) = response else {
        bail!("chimed answered wait with something else");
    };
    let outcome = waited.run.as_ref().and_then(|r| r.outcome.as_ref());
    if json {
        print_json(&json!({
            "id": waited.id.0,
            "state": waited.state.as_str(),
            "run": waited.run.as_ref().map(run_json),
        }));
    } else {
        match outcome {
            Some(outcome) => outln!("job {}: {} ({outcome})", waited.id, waited.state),
            None => outln!("job {}: {} (no run)", waited.id, waited.state),
        }
    }
    Ok(ExitCode::from(exit_status(outcome)))
}
