//! `add`: validate a job spec, then have the engine store it (or replace a named one).

use super::Peer;
use crate::context::Context;
use crate::engine::batch::Work;
use crate::job::Exec;
use crate::job::now_ms;
use crate::schedule::CronSchedule;
use chime_proto::request::limits;
use chime_proto::{
    CatchUpPolicy, Command, ErrorCode, ErrorReply, ExecSpec, JobSpec, Response, ScheduleSpec,
    SubmitJob,
};
use std::path::Path;
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
    validate(&job, &context.info.local_tz, bounds)
        .map_err(|message| ErrorReply::new(ErrorCode::BadRequest, message))?;
    // The directory and the program, seen with the submitter's eyes.
    let (program, path) = paths_to_check(&job, daemon_uid);
    let checked = if uid == daemon_uid {
        crate::as_user::check::paths(&job.cwd, program, path)
    } else {
        context
            .checked
            .as_user(&context.info.helper, uid, &job.cwd, program, path)
            .await
    };
    checked.map_err(|message| ErrorReply::new(ErrorCode::BadRequest, message))?;
    let mut exec = resolve_exec(&exec, &context.exec_defaults(), bounds)
        .map_err(|message| ErrorReply::new(ErrorCode::BadRequest, message))?;
    exec.journal |= journal;
    context
        .engine
        .request(Work::Submit {
            uid,
            user,
            job: Box::new(job),
            exec,
        })
        .await
}

/// The most retries a job may ask for.
const RETRIES_MAX: u32 = 1000;

/// Checks an execution spec and fills in chimed's defaults. With `bounds` (a user's job), a job
/// may keep at most the administrator's `max_output`, `keep_runs` and `retention`: more is
/// refused when asked for, and a default above them is lowered to them.
pub fn resolve_exec(
    spec: &ExecSpec,
    defaults: &Exec,
    bounds: Option<&crate::limits::Limits>,
) -> Result<Exec, String> {
    const DAY_MS: u64 = 86_400_000;
    if spec.retries.is_some_and(|r| r > RETRIES_MAX) {
        return Err(format!("--retries must be at most {RETRIES_MAX}"));
    }
    let base = spec.backoff_base_ms.unwrap_or(defaults.backoff_base_ms);
    let max = spec
        .backoff_max_ms
        .unwrap_or(defaults.backoff_max_ms.max(base));
    if base == 0 {
        return Err("--backoff: the first delay must be longer than zero".into());
    }
    if max < base {
        return Err("--backoff BASE:MAX: MAX must not be shorter than BASE".into());
    }
    if max > 366 * DAY_MS {
        return Err("--backoff: the longest delay may be at most a year".into());
    }
    if spec.timeout_ms == Some(0) {
        return Err("--timeout must be longer than zero".into());
    }
    if spec.kill_grace_ms.is_some_and(|g| g > DAY_MS) {
        return Err("--kill-grace may be at most a day".into());
    }
    if spec.max_output.is_some_and(|m| m < 1024) {
        return Err("--max-output must be at least 1K".into());
    }
    if spec.keep_runs == Some(0) {
        return Err("--keep-runs must be at least 1".into());
    }
    let retry_on = match &spec.retry_on {
        None => defaults.retry_on,
        Some(kinds) if kinds.is_empty() => {
            return Err("--retry-on needs at least one outcome".into());
        }
        Some(kinds) => kinds.iter().fold(0, |bits, k| bits | Exec::retry_bit(*k)),
    };
    let mut max_output = spec.max_output.unwrap_or(defaults.max_output);
    let mut keep_runs = spec.keep_runs.unwrap_or(defaults.keep_runs);
    let mut retention_ms = spec.retention_ms.unwrap_or(defaults.retention_ms);
    let (mut base, mut max) = (base, max);
    if let Some(limits) = bounds {
        // Retries are occurrences too: they come no faster than a recurring job may.
        let least_ms = limits.min_interval.as_millis().min(u128::from(u64::MAX)) as u64;
        if spec.backoff_base_ms.is_some_and(|b| b < least_ms) {
            return Err(format!(
                "--backoff: a user's retries may come at most every {} ({})",
                chime_proto::human::format_duration(limits.min_interval),
                limits.said("min_interval")
            ));
        }
        base = base.max(least_ms);
        max = max.max(base);
        let most_output = limits.max_output;
        let most_runs = limits.keep_runs;
        let most_ms = limits.retention.as_millis().min(u128::from(u64::MAX)) as u64;
        if spec.max_output.is_some_and(|m| m > most_output) {
            return Err(format!(
                "--max-output: a user's job may keep at most {} of output per run ({})",
                chime_proto::human::format_size(most_output),
                limits.said("max_output")
            ));
        }
        if spec.keep_runs.is_some_and(|k| k > most_runs) {
            return Err(format!(
                "--keep-runs: a user's job may keep at most {most_runs} runs ({})",
                limits.said("keep_runs")
            ));
        }
        if spec.retention_ms.is_some_and(|r| r > most_ms) {
            return Err(format!(
                "--retention: a user's job may be kept at most {} after it finished ({})",
                chime_proto::human::format_duration(limits.retention),
                limits.said("retention")
            ));
        }
        max_output = max_output.min(most_output);
        keep_runs = keep_runs.min(most_runs);
        retention_ms = retention_ms.min(most_ms);
    }
    Ok(Exec {
        retries: spec.retries.unwrap_or(defaults.retries),
        backoff_base_ms: base,
        backoff_max_ms: max,
        retry_on,
        timeout_ms: spec.timeout_ms.or(defaults.timeout_ms),
        kill_grace_ms: spec.kill_grace_ms.unwrap_or(defaults.kill_grace_ms),
        max_output,
        keep_runs,
        retention_ms,
        journal: defaults.journal,
    })
}

/// What the filesystem checks of a submission look at: the program of an argv command (a shell
/// command's program is `/bin/sh`) and the `PATH` it is looked up in, the job's or the default
/// one of a chimed running as `daemon_uid`.
pub fn paths_to_check(job: &JobSpec, daemon_uid: u32) -> (Option<&str>, &str) {
    let program = match &job.command {
        Command::Argv(argv) => argv.first().map(String::as_str),
        Command::Shell(_) | Command::Timer => None,
    };
    let path = job
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(crate::as_user::default_path(daemon_uid), |(_, v)| {
            v.as_str()
        });
    (program, path)
}

/// Checks a submission: the command, directory and environment against the protocol's limits,
/// and the schedule and policies for sense, and, with `bounds` (a user's job, not root's or
/// chimed's own user's), its schedule against `min_interval`. The messages name the option.
/// (Whether the directory and the program exist is checked apart, as the submitter: see
/// [`crate::as_user::check`].)
pub fn validate(
    job: &JobSpec,
    local: &jiff::tz::TimeZone,
    bounds: Option<&crate::limits::Limits>,
) -> Result<(), String> {
    let min_interval = bounds.map_or(std::time::Duration::ZERO, |l| l.min_interval);
    let said = || bounds.map(|l| l.said("min_interval")).unwrap_or_default();
    validate_command(job)?;
    let now = now_ms();
    const CENTURY_MS: u64 = 100 * 366 * 86_400_000;
    let recurring = matches!(
        job.schedule,
        ScheduleSpec::Every { .. } | ScheduleSpec::Cron { .. }
    );
    match &job.schedule {
        ScheduleSpec::After(ms) if *ms > CENTURY_MS => {
            return bad("--in: the delay is longer than 100 years".into());
        }
        ScheduleSpec::Every { interval_ms, .. } if *interval_ms == 0 => {
            return bad("--every: the interval must be longer than zero".into());
        }
        ScheduleSpec::Every { interval_ms, .. } if *interval_ms > CENTURY_MS => {
            return bad("--every: the interval is longer than 100 years".into());
        }
        ScheduleSpec::Cron { expr, tz } => {
            if expr.len() > limits::CRON_MAX {
                return bad(format!(
                    "--cron: the expression is longer than {} bytes",
                    limits::CRON_MAX
                ));
            }
            let zone = match tz {
                Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                    format!("--tz {name:?}: not a known time zone; use an IANA name such as Europe/Paris or America/New_York")
                })?,
                None => local.clone(),
            };
            let cron = CronSchedule::parse_checked(expr, zone, jiff::Timestamp::now())
                .map_err(|e| format!("--cron: {}", e.0))?;
            // The closest two of its next firings must be far enough apart.
            let min_ms = min_interval.as_millis() as i64;
            if min_ms > 1000 {
                let mut at = now;
                let mut closest = i64::MAX;
                for _ in 0..64 {
                    let Some(next) = crate::schedule::cron_next_after(&cron, at) else {
                        break;
                    };
                    if at != now {
                        closest = closest.min(next - at);
                    }
                    at = next;
                }
                if closest < min_ms {
                    return bad(format!(
                        "--cron: {expr:?} fires {} apart, more often than jobs may run ({})",
                        chime_proto::human::format_duration(std::time::Duration::from_millis(
                            closest as u64
                        )),
                        said()
                    ));
                }
            }
        }
        ScheduleSpec::Every { interval_ms, .. }
            if u128::from(*interval_ms) < min_interval.as_millis() =>
        {
            return bad(format!(
                "--every: the interval must be at least {} ({})",
                chime_proto::human::format_duration(min_interval),
                said()
            ));
        }
        _ => {}
    }
    if !recurring {
        if job.count.is_some() {
            return bad("--count applies to recurring jobs (--every or --cron)".into());
        }
        if job.until_ms.is_some() {
            return bad("--until applies to recurring jobs (--every or --cron)".into());
        }
    }
    if job.count == Some(0) {
        return bad("--count must be at least 1".into());
    }
    if job.until_ms.is_some_and(|until| until <= now) {
        return bad("--until is in the past; nothing would run".into());
    }
    if job.deadline_ms == Some(0) {
        return bad("--deadline must be longer than zero".into());
    }
    if let Some(CatchUpPolicy::All { limit }) = job.catch_up
        && !(1..=1000).contains(&limit)
    {
        return bad("--catch-up-limit must be between 1 and 1000".into());
    }
    if let Some(queue) = &job.queue {
        validate_queue_name(queue)?;
    }
    if job.replace && job.name.is_none() {
        return bad("--replace needs --name: it swaps the spec of the job with that name".into());
    }
    Ok(())
}

/// Queue names: like job names, at most 64 characters.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > limits::QUEUE_NAME_MAX {
        return bad(format!(
            "queue name {name:?} must be 1 to {} characters long",
            limits::QUEUE_NAME_MAX
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c)))
    {
        return bad(format!(
            "queue name {name:?} contains {c:?}; use letters, digits and . _ @ : -"
        ));
    }
    Ok(())
}

fn bad(message: String) -> Result<(), String> {
    Err(message)
}

/// Checks the command, name, directory and environment of a spec against the protocol's limits.
/// The messages name the field.
pub fn validate_command(spec: &JobSpec) -> Result<(), String> {
    if let Some(name) = &spec.name {
        validate_name(name)?;
    }
    let mut bytes = spec.cwd.len();
    match &spec.command {
        Command::Argv(argv) => {
            if argv.is_empty() || argv[0].is_empty() {
                return bad("the command is empty; give a program to run".into());
            }
            if argv.len() > limits::ARGV_MAX {
                return bad(format!(
                    "the command has {} arguments; at most {} are accepted",
                    argv.len(),
                    limits::ARGV_MAX
                ));
            }
            for arg in argv {
                no_nul("command argument", arg)?;
                bytes += arg.len();
            }
        }
        Command::Shell(script) => {
            if script.trim().is_empty() {
                return bad("the shell command is empty".into());
            }
            no_nul("shell command", script)?;
            bytes += script.len();
        }
        Command::Timer => {}
    }
    if spec.env.len() > limits::ENV_MAX {
        return bad(format!(
            "{} environment entries; at most {} are accepted",
            spec.env.len(),
            limits::ENV_MAX
        ));
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return bad(format!(
                "environment name {key:?} is not valid: it must be non-empty and have no '='"
            ));
        }
        no_nul("environment entry", key)?;
        no_nul("environment entry", value)?;
        bytes += key.len() + value.len();
    }
    if bytes > limits::SPEC_BYTES_MAX {
        return bad(format!(
            "the command, environment and working directory take {bytes} bytes; at most {} are accepted",
            limits::SPEC_BYTES_MAX
        ));
    }
    no_nul("working directory", &spec.cwd)?;
    let cwd = Path::new(&spec.cwd);
    if !cwd.is_absolute() {
        return bad(format!(
            "working directory {:?} is not an absolute path",
            spec.cwd
        ));
    }
    Ok(())
}

/// Names: 1-128 characters of letters, digits and `._@:-`, not all digits (those are ids), not
/// starting with `-` (it would read as an option).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > limits::NAME_MAX {
        return bad(format!(
            "job name {name:?} must be 1 to {} characters long",
            limits::NAME_MAX
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c)))
    {
        return bad(format!(
            "job name {name:?} contains {c:?}; use letters, digits and . _ @ : -"
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad(format!(
            "job name {name:?} is all digits, which reads as a job id; add a letter"
        ));
    }
    if name.starts_with('-') {
        return bad(format!("job name {name:?} may not start with '-'"));
    }
    Ok(())
}

fn no_nul(what: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return bad(format!("the {what} {text:?} contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: Command) -> JobSpec {
        JobSpec::new(command, "/", ScheduleSpec::Now)
    }

    #[test]
    fn names() {
        assert!(validate_name("backup-db.daily@host:1").is_ok());
        for bad in ["", "123", "-x", "a b", "é", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands_are_checked_for_form() {
        assert!(validate_command(&spec(Command::Argv(vec!["/bin/true".into()]))).is_ok());
        assert!(validate_command(&spec(Command::Argv(vec![]))).is_err());
        assert!(validate_command(&spec(Command::Argv(vec!["a\0b".into()]))).is_err());
        assert!(validate_command(&spec(Command::Shell("  ".into()))).is_err());
    }

    #[test]
    fn environment_and_directory() {
        let mut s = spec(Command::Shell("true".into()));
        s.env = vec![("A=B".into(), "c".into())];
        assert!(
            validate_command(&s)
                .unwrap_err()
                .contains("environment name")
        );
        s.env = vec![];
        s.cwd = "relative".into();
        assert!(validate_command(&s).unwrap_err().contains("absolute"));
    }
}
