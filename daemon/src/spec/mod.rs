//! The one check of a job spec. Every rule a job must meet is decided here and nowhere else:
//! `chimectl add` (through the request handler), job files at start, at reload and under
//! `chimed --check-config`, and the engine when it turns a submission into a stored job all ask
//! this module, so they cannot disagree.
//!
//! A refusal is a [`SpecError`]: a [`SpecField`] (a type, not a word in a sentence) and a message
//! that says what is wrong without naming the field. chimectl shows the field as its option
//! (`--every: ...`), the job-file parser as its key at the key's line (`x.toml:3: every: ...`).
//!
//! Three steps, in the order a submission meets them:
//! 1. [`check`]: the spec on its own, against the protocol's limits and, for a user's job, the
//!    administrator's ([`crate::limits::Limits`]): names, command, environment, directory,
//!    schedule, and the policies that go with it.
//! 2. The filesystem, as the job's owner: the working directory and the program, looked up in
//!    the job's `PATH` or the one [`default_path`] ([`paths_to_check`], then
//!    [`crate::as_user::check`]).
//! 3. [`resolve`]: the stored schedule and its first occurrence, which an `until` must not
//!    precede. It depends on the time, so the engine resolves again when it stores the job.
//!
//! Execution settings (retries, timeout, output...) are checked and get chimed's defaults in
//! [`exec`] ([`resolve_exec`]).

use crate::job::{Exec, Ms, Schedule, now_ms};
use crate::limits::Limits;
use crate::machine::Spec;
use crate::schedule::{CronSchedule, Recurrence};
use chime_proto::human::format_duration;
use chime_proto::request::limits;
use chime_proto::{
    CatchUpPolicy, Command, ErrorReply, JobSpec, OverlapPolicy, ScheduleSpec, SpecField,
};
use jiff::tz::TimeZone;
use std::time::Duration;

mod exec;
pub use exec::{check_host, check_limits, lower_to, resolve_exec};

/// The queue of a job that names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The latest instant anything may come due: the end of year 9999, so that every due time can
/// be shown as a date.
pub const MAX_DUE_MS: Ms = 253_402_300_799_000;

pub(crate) const DAY_MS: u64 = 86_400_000;
const CENTURY_MS: u64 = 100 * 366 * DAY_MS;

/// A rule a spec broke: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: SpecField,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field.key(), self.message)
    }
}

impl From<SpecError> for ErrorReply {
    fn from(e: SpecError) -> Self {
        ErrorReply::about(e.field, e.message)
    }
}

pub type SpecResult<T = ()> = Result<T, SpecError>;

pub(crate) fn bad<T>(field: SpecField, message: impl Into<String>) -> SpecResult<T> {
    Err(SpecError {
        field,
        message: message.into(),
    })
}

/// The `PATH` a job gets when it sets none, and the one its program is looked up in when it is
/// checked: the same for every job of every chimed, as systemd gives every unit, so that what
/// passed the check is what runs.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `PATH` the job will run with: its own, or [`DEFAULT_PATH`].
pub fn job_path(env: &[(String, String)]) -> &str {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
}

/// What the filesystem checks of a job look at: the program of an argv command (a shell
/// command's program is `/bin/sh`) and the `PATH` it will be looked up in.
pub fn paths_to_check(job: &JobSpec) -> (Option<&str>, &str) {
    let program = match &job.command {
        Command::Argv(argv) => argv.first().map(String::as_str),
        Command::Shell(_) | Command::Timer => None,
    };
    (program, job_path(&job.env))
}

/// Checks a spec on its own: the command, directory and environment against the protocol's
/// limits, the schedule and the policies for sense, and the schedule against `limits`'
/// `min_interval`, which holds for everyone's jobs (root's and declared ones too: it is a floor
/// the administrator sets for the host, not a share of it).
pub fn check(job: &JobSpec, local: &TimeZone, limits: &Limits) -> SpecResult {
    check_command(job)?;
    check_schedule(&job.schedule, local, Some(limits))?;
    check_policies(job)
}

/// Checks a schedule (also one `chimectl next` previews): delays and intervals within a
/// century and above zero, a known zone, a cron expression that parses and, with `floor`,
/// occurrences no closer than its `min_interval`.
pub fn check_schedule(
    schedule: &ScheduleSpec,
    local: &TimeZone,
    floor: Option<&Limits>,
) -> SpecResult {
    let min_interval = floor.map_or(Duration::ZERO, |l| l.min_interval);
    let said = || floor.map(|l| l.said("min_interval")).unwrap_or_default();
    match schedule {
        ScheduleSpec::After(ms) if *ms > CENTURY_MS => {
            bad(SpecField::In, "the delay is longer than 100 years")
        }
        ScheduleSpec::Every { interval_ms, .. } if *interval_ms == 0 => {
            bad(SpecField::Every, "the interval must be longer than zero")
        }
        ScheduleSpec::Every { interval_ms, .. } if *interval_ms > CENTURY_MS => {
            bad(SpecField::Every, "the interval is longer than 100 years")
        }
        ScheduleSpec::Every { interval_ms, .. }
            if u128::from(*interval_ms) < min_interval.as_millis() =>
        {
            bad(
                SpecField::Every,
                format!(
                    "the interval must be at least {} ({})",
                    format_duration(min_interval),
                    said()
                ),
            )
        }
        ScheduleSpec::Cron { expr, tz } => {
            let cron = cron_schedule(expr, tz.as_deref(), local)?;
            // Cron's finest step is a second: only a longer minimum needs the firings looked at.
            if min_interval.as_millis() <= 1000 {
                return Ok(());
            }
            let closest = closest_firings(&cron);
            if closest < min_interval.as_millis() as i64 {
                return bad(
                    SpecField::Cron,
                    format!(
                        "{expr:?} fires {} apart, more often than jobs may run ({})",
                        format_duration(Duration::from_millis(closest as u64)),
                        said()
                    ),
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A cron expression in its zone (`tz`, else `local`), checked.
pub fn cron_schedule(expr: &str, tz: Option<&str>, local: &TimeZone) -> SpecResult<CronSchedule> {
    if expr.len() > limits::CRON_MAX {
        return bad(
            SpecField::Cron,
            format!("the expression is longer than {} bytes", limits::CRON_MAX),
        );
    }
    let zone = match tz {
        Some(name) => TimeZone::get(name).or_else(|_| {
            bad(
                SpecField::Tz,
                format!(
                    "{name:?} is not a known time zone; use an IANA name such as Europe/Paris or America/New_York"
                ),
            )
        })?,
        None => local.clone(),
    };
    CronSchedule::parse_checked(expr, zone, jiff::Timestamp::now())
        .or_else(|e| bad(SpecField::Cron, e.0))
}

/// The shortest time between two of a cron schedule's next 64 firings.
fn closest_firings(cron: &CronSchedule) -> i64 {
    let now = now_ms();
    let mut at = now;
    let mut closest = i64::MAX;
    for _ in 0..64 {
        let Some(next) = crate::schedule::cron_next_after(cron, at) else {
            break;
        };
        if at != now {
            closest = closest.min(next - at);
        }
        at = next;
    }
    closest
}

/// The policies and their fit with the schedule: what only recurring jobs have, counts and
/// limits in range, the queue's name, `replace` with a name.
fn check_policies(job: &JobSpec) -> SpecResult {
    let recurring = matches!(
        job.schedule,
        ScheduleSpec::Every { .. } | ScheduleSpec::Cron { .. }
    );
    if !recurring {
        for (field, given) in [
            (SpecField::Count, job.count.is_some()),
            (SpecField::Until, job.until_ms.is_some()),
            (SpecField::CatchUp, job.catch_up.is_some()),
            (SpecField::Overlap, job.overlap.is_some()),
        ] {
            if given {
                return bad(
                    field,
                    "applies to recurring jobs only (every or cron schedules)",
                );
            }
        }
    }
    if job.count == Some(0) {
        return bad(SpecField::Count, "must be at least 1");
    }
    if job.deadline_ms == Some(0) {
        return bad(SpecField::Deadline, "must be longer than zero");
    }
    if let Some(CatchUpPolicy::All { limit }) = job.catch_up
        && !(1..=1000).contains(&limit)
    {
        return bad(SpecField::CatchUpLimit, "must be between 1 and 1000");
    }
    if let Some(queue) = &job.queue {
        check_queue_name(queue)?;
    }
    if job.replace && job.name.is_none() {
        return bad(
            SpecField::Replace,
            "needs a name: it swaps the spec of the job with that name",
        );
    }
    Ok(())
}

/// Queue names: like job names, at most 64 characters.
pub fn check_queue_name(name: &str) -> SpecResult {
    if name.is_empty() || name.len() > limits::QUEUE_NAME_MAX {
        return bad(
            SpecField::Queue,
            format!(
                "queue name {name:?} must be 1 to {} characters long",
                limits::QUEUE_NAME_MAX
            ),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c)))
    {
        return bad(
            SpecField::Queue,
            format!("queue name {name:?} contains {c:?}; use letters, digits and . _ @ : -"),
        );
    }
    Ok(())
}

/// Checks the command, name, directory and environment of a spec against the protocol's limits.
pub fn check_command(spec: &JobSpec) -> SpecResult {
    if let Some(name) = &spec.name {
        check_name(name)?;
    }
    let mut bytes = spec.cwd.len();
    match &spec.command {
        Command::Argv(argv) => {
            if argv.is_empty() || argv[0].is_empty() {
                return bad(SpecField::Command, "is empty; give a program to run");
            }
            if argv.len() > limits::ARGV_MAX {
                return bad(
                    SpecField::Command,
                    format!(
                        "has {} arguments; at most {} are accepted",
                        argv.len(),
                        limits::ARGV_MAX
                    ),
                );
            }
            for arg in argv {
                no_nul(SpecField::Command, "argument", arg)?;
                bytes += arg.len();
            }
        }
        Command::Shell(script) => {
            if script.trim().is_empty() {
                return bad(SpecField::Command, "the shell command is empty");
            }
            no_nul(SpecField::Command, "shell command", script)?;
            bytes += script.len();
        }
        Command::Timer => {}
    }
    bytes += check_env(&spec.env)?;
    if bytes > limits::SPEC_BYTES_MAX {
        // The environment is what grows; a long command or directory is refused by its own
        // limits first.
        return bad(
            SpecField::Env,
            format!(
                "the command, environment and working directory take {bytes} bytes; at most {} are accepted",
                limits::SPEC_BYTES_MAX
            ),
        );
    }
    no_nul(SpecField::Cwd, "working directory", &spec.cwd)?;
    if !std::path::Path::new(&spec.cwd).is_absolute() {
        return bad(
            SpecField::Cwd,
            format!("{:?} is not an absolute path", spec.cwd),
        );
    }
    Ok(())
}

/// Checks the environment's entries; returns the bytes they take.
fn check_env(env: &[(String, String)]) -> SpecResult<usize> {
    if env.len() > limits::ENV_MAX {
        return bad(
            SpecField::Env,
            format!(
                "{} entries; at most {} are accepted",
                env.len(),
                limits::ENV_MAX
            ),
        );
    }
    let mut bytes = 0;
    for (key, value) in env {
        if key.is_empty() || key.contains('=') {
            return bad(
                SpecField::Env,
                format!(
                    "environment name {key:?} is not valid: it must be non-empty and have no '='"
                ),
            );
        }
        no_nul(SpecField::Env, "entry", key)?;
        no_nul(SpecField::Env, "entry", value)?;
        bytes += key.len() + value.len();
    }
    Ok(bytes)
}

/// Names: 1-128 characters of letters, digits and `._@:-`, not all digits (those are ids), not
/// starting with `-` (it would read as an option).
pub fn check_name(name: &str) -> SpecResult {
    let refuse = |what: String| bad(SpecField::Name, format!("job name {name:?} {what}"));
    if name.is_empty() || name.len() > limits::NAME_MAX {
        return refuse(format!("must be 1 to {} characters long", limits::NAME_MAX));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c)))
    {
        return refuse(format!("contains {c:?}; use letters, digits and . _ @ : -"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return refuse("is all digits, which reads as a job id; add a letter".into());
    }
    if name.starts_with('-') {
        return refuse("may not start with '-'".into());
    }
    Ok(())
}

fn no_nul(field: SpecField, what: &str, text: &str) -> SpecResult {
    if text.contains('\0') {
        return bad(field, format!("the {what} {text:?} contains a NUL byte"));
    }
    Ok(())
}

/// Turns a checked submission into the state machine's spec and its first occurrence, at `now`:
/// refused when nothing would run (`until` past or before the first occurrence, a schedule with
/// no occurrence left). These are the rules that depend on the time: a submission is held to
/// them; a job file's declaration is applied without them ([`machine_spec`]) and only warned
/// about, since time alone must never make a file that was fine wrong.
pub fn resolve(spec: &JobSpec, exec: Exec, now: Ms, local: &TimeZone) -> SpecResult<(Spec, Ms)> {
    if spec.until_ms.is_some_and(|until| until <= now) {
        return bad(SpecField::Until, "is in the past; nothing would run");
    }
    let (machine, first_due) = machine_spec(spec, exec, now, local)?;
    let Some(first_due) = first_due else {
        let field = match spec.schedule {
            ScheduleSpec::Every { .. } => SpecField::From,
            _ => SpecField::Cron,
        };
        return bad(field, "the schedule has no occurrence after now");
    };
    if let Some(until) = spec.until_ms
        && until < first_due
    {
        return bad(
            SpecField::Until,
            format!(
                "is before the first occurrence ({}); nothing would run",
                chime_proto::human::rfc3339(first_due)
            ),
        );
    }
    Ok((machine, first_due))
}

/// The state machine's spec of a checked submission, with chimed's defaults, and its first
/// occurrence at or after `now` (`None`: none is left), whatever `until` says.
pub fn machine_spec(
    spec: &JobSpec,
    exec: Exec,
    now: Ms,
    local: &TimeZone,
) -> SpecResult<(Spec, Option<Ms>)> {
    let (schedule, first_due) = resolve_schedule(&spec.schedule, now, local)?;
    let machine = Spec {
        command: spec.command.clone(),
        cwd: spec.cwd.clone(),
        env: spec.env.clone(),
        schedule,
        count: spec.count,
        until_ms: spec.until_ms,
        catch_up: spec.catch_up.unwrap_or(CatchUpPolicy::Latest),
        deadline_ms: spec.deadline_ms,
        overlap: spec.overlap.unwrap_or(OverlapPolicy::Skip),
        queue: spec.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into()),
        exec,
    };
    Ok((machine, first_due))
}

/// Turns a submitted schedule into the stored one and its first occurrence at or after `now`.
pub fn resolve_schedule(
    spec: &ScheduleSpec,
    now: Ms,
    local: &TimeZone,
) -> SpecResult<(Schedule, Option<Ms>)> {
    let once = |at: Ms| (Schedule::Once { at_ms: at }, Some(at));
    let (field, schedule) = match spec {
        ScheduleSpec::Now => return Ok(once(now)),
        ScheduleSpec::At(at) => return Ok(once((*at).clamp(0, MAX_DUE_MS))),
        ScheduleSpec::After(ms) => {
            let at = now.saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX));
            return Ok(once(at.min(MAX_DUE_MS)));
        }
        ScheduleSpec::Every {
            interval_ms,
            from_ms,
        } => {
            if *interval_ms == 0 {
                return bad(SpecField::Every, "the interval must be longer than zero");
            }
            let schedule = Schedule::Every {
                anchor_ms: from_ms.unwrap_or(now).clamp(0, MAX_DUE_MS),
                interval_ms: *interval_ms,
            };
            (SpecField::Every, schedule)
        }
        ScheduleSpec::Cron { expr, tz } => {
            let schedule = Schedule::Cron {
                expr: expr.clone(),
                tz: tz.clone(),
            };
            (SpecField::Cron, schedule)
        }
    };
    let recurrence = Recurrence::of(&schedule, local).or_else(|e| bad(field, e.to_string()))?;
    // An interval's anchor is its first occurrence when it is ahead; a cron schedule's first
    // firing is strictly after now.
    let after = if field == SpecField::Every {
        now - 1
    } else {
        now
    };
    Ok((schedule, recurrence.next_after(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: Command) -> JobSpec {
        JobSpec::new(command, "/", ScheduleSpec::Now)
    }

    fn field(result: SpecResult) -> SpecField {
        result.expect_err("refused").field
    }

    #[test]
    fn names() {
        assert!(check_name("backup-db.daily@host:1").is_ok());
        for bad in ["", "123", "-x", "a b", "é", &"x".repeat(129)] {
            assert_eq!(field(check_name(bad)), SpecField::Name, "{bad:?}");
        }
    }

    #[test]
    fn commands_are_checked_for_form() {
        assert!(check_command(&spec(Command::Argv(vec!["/bin/true".into()]))).is_ok());
        for command in [
            Command::Argv(vec![]),
            Command::Argv(vec!["a\0b".into()]),
            Command::Shell("  ".into()),
        ] {
            assert_eq!(field(check_command(&spec(command))), SpecField::Command);
        }
    }

    #[test]
    fn environment_and_directory() {
        let mut s = spec(Command::Shell("true".into()));
        s.env = vec![("A=B".into(), "c".into())];
        assert_eq!(field(check_command(&s)), SpecField::Env);
        s.env = vec![("BIG".into(), "x".repeat(limits::SPEC_BYTES_MAX))];
        assert_eq!(field(check_command(&s)), SpecField::Env);
        s.env = vec![];
        s.cwd = "relative".into();
        let e = check_command(&s).unwrap_err();
        assert_eq!(e.field, SpecField::Cwd);
        assert!(e.message.contains("absolute"), "{e}");
    }

    #[test]
    fn until_must_not_precede_the_first_occurrence() {
        let now = now_ms();
        let mut s = spec(Command::Timer);
        s.schedule = ScheduleSpec::Every {
            interval_ms: 60_000,
            from_ms: Some(now + 3_600_000),
        };
        s.until_ms = Some(now + 60_000);
        assert!(
            check(&s, &TimeZone::UTC, &Limits::defaults(0)).is_ok(),
            "on its own it is fine"
        );
        let e = resolve(&s, Exec::default(), now, &TimeZone::UTC).unwrap_err();
        assert_eq!(e.field, SpecField::Until);
        s.until_ms = Some(now + 7_200_000);
        assert!(resolve(&s, Exec::default(), now, &TimeZone::UTC).is_ok());
    }

    #[test]
    fn policies_need_a_recurring_schedule() {
        let mut s = spec(Command::Timer);
        s.overlap = Some(OverlapPolicy::Queue);
        assert_eq!(
            field(check(&s, &TimeZone::UTC, &Limits::defaults(0))),
            SpecField::Overlap
        );
        s.schedule = ScheduleSpec::Cron {
            expr: "0 3 * * *".into(),
            tz: Some("Mars/Olympus".into()),
        };
        assert_eq!(
            field(check(&s, &TimeZone::UTC, &Limits::defaults(0))),
            SpecField::Tz
        );
    }
}
