//! The rules of a job's execution settings (retries, backoff, retry_on, timeout, kill_grace,
//! max_output, keep_runs, retention) and chimed's defaults for those a job leaves out; for a
//! user's job, also the administrator's bounds ([`crate::limits::Limits`]).

use super::{DAY_MS, SpecResult, bad};
use crate::job::Exec;
use crate::limits::Limits;
use chime_proto::human::{format_duration, format_size};
use chime_proto::{ExecSpec, SpecField};
use std::time::Duration;

/// The most retries a job may ask for.
const RETRIES_MAX: u32 = 1000;

/// The most runs a job may keep.
const KEEP_RUNS_MAX: u32 = 1_000_000;

/// Checks an execution spec and fills in chimed's defaults. With `bounds` (a user's job), a job
/// may keep at most the administrator's `max_output`, `keep_runs` and `retention`: more is
/// refused when asked for, and a default above them is lowered to them.
pub fn resolve_exec(spec: &ExecSpec, defaults: &Exec, bounds: Option<&Limits>) -> SpecResult<Exec> {
    if spec.retries.is_some_and(|r| r > RETRIES_MAX) {
        return bad(SpecField::Retries, format!("must be at most {RETRIES_MAX}"));
    }
    let base = spec.backoff_base_ms.unwrap_or(defaults.backoff_base_ms);
    let max = spec
        .backoff_max_ms
        .unwrap_or(defaults.backoff_max_ms.max(base));
    if base == 0 {
        return bad(
            SpecField::Backoff,
            "the first delay must be longer than zero",
        );
    }
    if max < base {
        return bad(SpecField::Backoff, "MAX must not be shorter than BASE");
    }
    if max > 366 * DAY_MS {
        return bad(
            SpecField::Backoff,
            "the longest delay may be at most a year",
        );
    }
    if spec.timeout_ms == Some(0) {
        return bad(SpecField::Timeout, "must be longer than zero");
    }
    if spec.kill_grace_ms.is_some_and(|g| g > DAY_MS) {
        return bad(SpecField::KillGrace, "may be at most a day");
    }
    if spec.max_output.is_some_and(|m| m < 1024) {
        return bad(SpecField::MaxOutput, "must be at least 1K");
    }
    if spec.keep_runs == Some(0) {
        return bad(SpecField::KeepRuns, "must be at least 1");
    }
    if spec.keep_runs.is_some_and(|k| k > KEEP_RUNS_MAX) {
        return bad(
            SpecField::KeepRuns,
            format!("may be at most {KEEP_RUNS_MAX}"),
        );
    }
    let retry_on = match &spec.retry_on {
        None => defaults.retry_on,
        Some(kinds) if kinds.is_empty() => {
            return bad(SpecField::RetryOn, "needs at least one outcome");
        }
        Some(kinds) => kinds.iter().fold(0, |bits, k| bits | Exec::retry_bit(*k)),
    };
    let mut exec = Exec {
        retries: spec.retries.unwrap_or(defaults.retries),
        backoff_base_ms: base,
        backoff_max_ms: max,
        retry_on,
        timeout_ms: spec.timeout_ms.or(defaults.timeout_ms),
        kill_grace_ms: spec.kill_grace_ms.unwrap_or(defaults.kill_grace_ms),
        max_output: spec.max_output.unwrap_or(defaults.max_output),
        keep_runs: spec.keep_runs.unwrap_or(defaults.keep_runs),
        retention_ms: spec.retention_ms.unwrap_or(defaults.retention_ms),
        journal: defaults.journal,
    };
    if let Some(limits) = bounds {
        bound_exec(spec, &mut exec, limits)?;
    }
    Ok(exec)
}

/// Holds a user's job to the administrator's limits: more than they allow is refused when asked
/// for, and a default above them is lowered to them.
fn bound_exec(spec: &ExecSpec, exec: &mut Exec, limits: &Limits) -> SpecResult {
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    // Retries are occurrences too: they come no faster than a recurring job may.
    let least_ms = ms(limits.min_interval);
    if spec.backoff_base_ms.is_some_and(|b| b < least_ms) {
        return bad(
            SpecField::Backoff,
            format!(
                "a user's retries may come at most every {} ({})",
                format_duration(limits.min_interval),
                limits.said("min_interval")
            ),
        );
    }
    if spec.max_output.is_some_and(|m| m > limits.max_output) {
        return bad(
            SpecField::MaxOutput,
            format!(
                "a user's job may keep at most {} of output per run ({})",
                format_size(limits.max_output),
                limits.said("max_output")
            ),
        );
    }
    if spec.keep_runs.is_some_and(|k| k > limits.keep_runs) {
        return bad(
            SpecField::KeepRuns,
            format!(
                "a user's job may keep at most {} runs ({})",
                limits.keep_runs,
                limits.said("keep_runs")
            ),
        );
    }
    let most_ms = ms(limits.retention);
    if spec.retention_ms.is_some_and(|r| r > most_ms) {
        return bad(
            SpecField::Retention,
            format!(
                "a user's job may be kept at most {} after it finished ({})",
                format_duration(limits.retention),
                limits.said("retention")
            ),
        );
    }
    exec.backoff_base_ms = exec.backoff_base_ms.max(least_ms);
    exec.backoff_max_ms = exec.backoff_max_ms.max(exec.backoff_base_ms);
    exec.max_output = exec.max_output.min(limits.max_output);
    exec.keep_runs = exec.keep_runs.min(limits.keep_runs);
    exec.retention_ms = exec.retention_ms.min(most_ms);
    Ok(())
}
