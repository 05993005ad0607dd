//! A stored job written as a job file, for `chimectl edit`: the inverse of [`super::parse_edit`].
//!
//! The contract is the round trip: [`super::parse_edit`] of the text [`render`] writes, with the
//! same context, gives the job its spec back unchanged (command, schedule, policies, queue and
//! every execution setting; the tests below check it over many jobs). To keep it exact:
//!
//! - Instants (`at`, `from`, `until`) are written with their UTC offset (and milliseconds when
//!   they have some), so no zone is guessed when they are read back; they are shown in the
//!   job's cron zone, else chimed's.
//! - A cron job always carries `tz`: its own, else chimed's zone by name (what it ran in).
//! - Durations and sizes are written exactly (`1m30s500ms`, `1536KiB`).
//! - An execution setting is written when it differs from what the file would get without it
//!   (chimed's defaults, for a user lowered to their `[limits]`); the others are listed as
//!   comments, to be uncommented. The job's own resource limits are written; those it leaves
//!   to its queue are not, as a file leaves them.
//!
//! What a file cannot say is said in a comment: a cron job of a chimed whose zone has no name,
//! a job without a timeout when chimed's default now has one.

use super::super::LoadContext;
use super::Editing;
use crate::job::{Exec, Job, Schedule};
use chime_proto::human::{format_duration, format_size};
use chime_proto::{CatchUpPolicy, Command, OverlapPolicy};
use std::fmt::Write as _;
use std::time::Duration;

/// The job file of `job`, as `editing` is to see it (root is shown whom it runs as), with a
/// comment header that says which job it is and how to abort the edit.
pub fn render(job: &Job, ctx: &LoadContext, editing: &Editing<'_>) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let which = match &job.name {
        Some(name) => format!("job {} ({name})", job.id),
        None => format!("job {}", job.id),
    };
    line(format!(
        "# chimectl edit: {which} of {}, as a job file (the README's \"Job files\").",
        job.owner_name
    ));
    line(
        "# Save and quit to apply it as `chimectl add --replace` would: the job keeps its id,"
            .into(),
    );
    line("# name, owner and history. To abort, quit without saving, or empty the file.".into());
    line(String::new());
    match &job.command {
        Command::Argv(argv) => line(format!("command = {}", strings(argv))),
        Command::Shell(script) => line(format!("shell = {}", string(script))),
        Command::Timer => line("timer = true".into()),
    }
    let zone = match &job.schedule {
        Schedule::Cron { tz: Some(tz), .. } => {
            jiff::tz::TimeZone::get(tz).unwrap_or_else(|_| ctx.local_tz.clone())
        }
        _ => ctx.local_tz.clone(),
    };
    let at = |ms: i64| string(&instant(ms, &zone));
    match &job.schedule {
        Schedule::Cron { expr, tz } => {
            line(format!("cron = {}", string(expr)));
            match (tz, ctx.local_tz.iana_name()) {
                (Some(tz), _) => line(format!("tz = {}", string(tz))),
                (None, Some(local)) => {
                    line(format!(
                        "tz = {}  # chimed's zone, which the job ran in",
                        string(local)
                    ));
                }
                (None, None) => line(
                    "# tz: none; the job runs in chimed's zone, which has no name to write here"
                        .into(),
                ),
            }
        }
        Schedule::Every {
            anchor_ms,
            interval_ms,
        } => {
            line(format!("every = {}", string(&duration(*interval_ms))));
            line(format!("from = {}", at(*anchor_ms)));
        }
        Schedule::Once { at_ms } => {
            line(format!("at = {}", at(*at_ms)));
            if *at_ms <= crate::job::now_ms() {
                line("# (past: if you change the job, it runs again at once)".into());
            }
        }
    }
    if editing.uid == 0 {
        line(format!("user = {}", string(&job.owner_name)));
    }
    line(format!("cwd = {}", string(&job.cwd)));
    if !job.env.is_empty() {
        let table: toml::value::Table = job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
            .collect();
        line(format!("env = {}", toml::Value::Table(table)));
    }
    line(format!("queue = {}", string(&job.queue)));
    if job.schedule.is_recurring() {
        if let Some(count) = job.count {
            line(format!("count = {count}"));
        }
        if let Some(until) = job.until_ms {
            line(format!("until = {}", at(until)));
        }
        match job.catch_up {
            CatchUpPolicy::Skip => line("catch_up = \"skip\"".into()),
            CatchUpPolicy::Latest => line("catch_up = \"latest\"".into()),
            CatchUpPolicy::All { limit } => {
                line("catch_up = \"all\"".into());
                line(format!("catch_up_limit = {limit}"));
            }
        }
        line(format!("overlap = {}", string(overlap(job.overlap))));
    }
    if let Some(deadline) = job.deadline_ms {
        line(format!("deadline = {}", string(&duration(deadline))));
    }
    let mut defaults = ctx.exec_defaults.clone();
    if let Some(bounds) = editing.bounds {
        crate::spec::lower_to(&mut defaults, bounds);
    }
    let (set, left) = settings(&job.exec, &defaults);
    for (key, value) in set {
        line(format!("{key} = {value}"));
    }
    if !left.is_empty() {
        line(String::new());
        line("# Left at chimed's defaults (uncomment a line to set it):".into());
        for (key, value) in left {
            line(format!("# {key} = {value}"));
        }
    }
    if job.exec.limits.is_empty() {
        line(
            "# memory_max, cpu_quota, tasks_max, io_weight: the queue's, else chimed's defaults"
                .into(),
        );
    }
    if job.exec.timeout_ms.is_none()
        && let Some(default) = defaults.timeout_ms
    {
        line(format!(
            "# (the job has no timeout; chimed's default is now {}, which it gets if you save a change)",
            duration(default)
        ));
    }
    out
}

/// The execution settings, as `(key, value)`: those `exec` sets otherwise than `defaults`, and
/// those it leaves as they are (for comments).
type Settings = Vec<(&'static str, String)>;

fn settings(exec: &Exec, defaults: &Exec) -> (Settings, Settings) {
    let mut set = Vec::new();
    let mut left = Vec::new();
    let mut put = |key: &'static str, value: String, is_default: bool| {
        if is_default {
            left.push((key, value));
        } else {
            set.push((key, value));
        }
    };
    put(
        "retries",
        exec.retries.to_string(),
        exec.retries == defaults.retries,
    );
    put(
        "backoff",
        string(&format!(
            "{}:{}",
            duration(exec.backoff_base_ms),
            duration(exec.backoff_max_ms)
        )),
        (exec.backoff_base_ms, exec.backoff_max_ms)
            == (defaults.backoff_base_ms, defaults.backoff_max_ms),
    );
    let kinds: Vec<String> = exec
        .retry_kinds()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    put(
        "retry_on",
        strings(&kinds),
        exec.retry_on == defaults.retry_on || kinds.is_empty(),
    );
    match exec.timeout_ms {
        Some(timeout) => put(
            "timeout",
            string(&duration(timeout)),
            Some(timeout) == defaults.timeout_ms,
        ),
        None => put(
            "timeout",
            format!(
                "{}  # for one; now none: a run may take any time",
                string("1h")
            ),
            true,
        ),
    }
    put(
        "kill_grace",
        string(&duration(exec.kill_grace_ms)),
        exec.kill_grace_ms == defaults.kill_grace_ms,
    );
    put(
        "max_output",
        string(&format_size(exec.max_output)),
        exec.max_output == defaults.max_output,
    );
    put(
        "keep_runs",
        exec.keep_runs.to_string(),
        exec.keep_runs == defaults.keep_runs,
    );
    put(
        "retention",
        string(&duration(exec.retention_ms)),
        exec.retention_ms == defaults.retention_ms,
    );
    put(
        "journal",
        exec.journal.to_string(),
        exec.journal == defaults.journal,
    );
    let limits = &exec.limits;
    if let Some(bytes) = limits.memory_max {
        set.push(("memory_max", string(&format_size(bytes))));
    }
    if let Some(pct) = limits.cpu_quota_pct {
        set.push(("cpu_quota", string(&format!("{pct}%"))));
    }
    if let Some(tasks) = limits.tasks_max {
        set.push(("tasks_max", tasks.to_string()));
    }
    if let Some(weight) = limits.io_weight {
        set.push(("io_weight", weight.to_string()));
    }
    let keep = exec.keep_children;
    let value = keep.to_string();
    if keep == defaults.keep_children {
        left.push(("keep_children", value));
    } else {
        set.push(("keep_children", value));
    }
    (set, left)
}

fn overlap(policy: OverlapPolicy) -> &'static str {
    match policy {
        OverlapPolicy::Skip => "skip",
        OverlapPolicy::Queue => "queue",
        OverlapPolicy::Allow => "allow",
        OverlapPolicy::Replace => "replace",
    }
}

/// A TOML basic string, escaped as TOML needs.
fn string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML array of strings.
fn strings(items: &[String]) -> String {
    toml::Value::Array(
        items
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

/// A duration exactly, in the units [`chime_proto::human::parse_duration`] reads: `1h30m`,
/// `250ms`, `1m0s500ms` is written `1m500ms`.
fn duration(ms: u64) -> String {
    let whole = format_duration(Duration::from_secs(ms / 1000));
    match (ms / 1000, ms % 1000) {
        (_, 0) => whole,
        (0, rest) => format!("{rest}ms"),
        (_, rest) => format!("{whole}{rest}ms"),
    }
}

/// An instant in `zone`, with its UTC offset (RFC 3339 with a space, as `date --rfc-3339`
/// writes it), and milliseconds when it has some: read back the same in any zone.
fn instant(ms: i64, zone: &jiff::tz::TimeZone) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return format!("@{ms}ms");
    };
    let format = if ms.rem_euclid(1000) == 0 {
        "%Y-%m-%d %H:%M:%S%:z"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f%:z"
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "{}",
        ts.to_zoned_datetime(zone.clone()).strftime(format)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse_edit;
    use super::*;
    use crate::limits::Limits;
    use crate::machine::Spec;
    use chime_proto::{JobId, ResourceLimits};

    const HOUR: i64 = 3_600_000;

    /// chimed in Paris, with defaults of its own, on a host with every controller.
    fn ctx() -> LoadContext {
        LoadContext {
            daemon_uid: 0,
            local_tz: jiff::tz::TimeZone::get("Europe/Paris").expect("the tz database"),
            exec_defaults: Exec {
                retries: 2,
                timeout_ms: Some(HOUR as u64),
                ..Exec::default()
            },
            controllers: crate::cgroup::Controllers {
                cpu: true,
                memory: true,
                pids: true,
                io: true,
            },
            limits: crate::limits::Limits::defaults(0),
        }
    }

    fn job(name: Option<&str>, spec: Spec) -> Job {
        let now = crate::job::now_ms();
        let mut job = spec.into_job(JobId(42), (0, "root".into()), now, now + HOUR);
        job.name = name.map(str::to_owned);
        job
    }

    fn editing<'a>(job: &'a Job, uid: u32, bounds: Option<&'a Limits>) -> Editing<'a> {
        Editing {
            uid,
            name: job.name.as_deref(),
            owner: job.owner,
            owner_name: &job.owner_name,
            bounds,
        }
    }

    /// Renders `job`, parses the text back as an edit, and returns the spec it gives.
    fn round_trip(job: &Job, ctx: &LoadContext, editing: &Editing<'_>) -> (String, Spec) {
        let text = render(job, ctx, editing);
        let now = crate::job::now_ms();
        let edited = parse_edit("x.toml", &text, ctx, editing, now)
            .unwrap_or_else(|e| panic!("{e}\n--- the text:\n{text}"));
        assert_eq!(edited.job.name, job.name, "the edit keeps the name");
        let (spec, _) = crate::spec::machine_spec(&edited.job, edited.exec, now, &ctx.local_tz)
            .expect("the spec resolves");
        (text, spec)
    }

    /// Specs of every kind: each schedule, each policy, each execution setting and limit.
    fn specs() -> Vec<Spec> {
        let now = crate::job::now_ms();
        let ctx = ctx();
        let base = Spec {
            command: Command::Argv(vec!["/bin/echo".into(), "hi".into()]),
            cwd: "/".into(),
            env: Vec::new(),
            schedule: Schedule::Cron {
                expr: "30 2 * * *".into(),
                tz: Some("America/New_York".into()),
            },
            count: None,
            until_ms: None,
            catch_up: CatchUpPolicy::Latest,
            deadline_ms: None,
            overlap: OverlapPolicy::Skip,
            queue: "default".into(),
            exec: ctx.exec_defaults.clone(),
        };
        let every = Schedule::Every {
            anchor_ms: now - 12_345,
            interval_ms: 90_500,
        };
        vec![
            base.clone(),
            Spec {
                command: Command::Shell(
                    "pg_dump db | gzip > \"/b/db $(date).gz\"\n# two lines\\".into(),
                ),
                schedule: Schedule::Cron {
                    expr: "0 9 * * 1-5".into(),
                    tz: Some("Asia/Kolkata".into()),
                },
                count: Some(10),
                until_ms: Some(now + 400 * 24 * HOUR + 1),
                catch_up: CatchUpPolicy::All { limit: 3 },
                overlap: OverlapPolicy::Queue,
                deadline_ms: Some(600_000),
                queue: "backups".into(),
                ..base.clone()
            },
            Spec {
                command: Command::Timer,
                schedule: every.clone(),
                catch_up: CatchUpPolicy::Skip,
                overlap: OverlapPolicy::Replace,
                ..base.clone()
            },
            Spec {
                schedule: Schedule::Every {
                    anchor_ms: now + 7 * 24 * HOUR,
                    interval_ms: 24 * HOUR as u64,
                },
                overlap: OverlapPolicy::Allow,
                until_ms: Some(now + 30 * 24 * HOUR),
                ..base.clone()
            },
            Spec {
                schedule: Schedule::Once { at_ms: now + HOUR },
                ..base.clone()
            },
            Spec {
                // One-shot, already due (as `chimectl add` with no schedule stores it).
                schedule: Schedule::Once { at_ms: now - 1_234 },
                ..base.clone()
            },
            Spec {
                command: Command::Argv(vec![
                    "/usr/bin/env".into(),
                    "quote\"s".into(),
                    "back\\slash".into(),
                    "new\nline".into(),
                    "tab\t, unicode é ☃".into(),
                    String::new(),
                ]),
                cwd: "/tmp/dir with spaces".into(),
                env: vec![
                    ("A.B".into(), "dotted key".into()),
                    ("LANG".into(), "C.UTF-8".into()),
                    ("PATH".into(), "/opt/x/bin:/usr/bin:/bin".into()),
                    ("WEIRD KEY".into(), "\"quoted\" = \\ \n".into()),
                ],
                schedule: every.clone(),
                ..base.clone()
            },
            Spec {
                exec: Exec {
                    retries: 3,
                    backoff_base_ms: 5_000,
                    backoff_max_ms: 120_000,
                    retry_on: Exec::retry_bit(chime_proto::RetryOn::Exit)
                        | Exec::retry_bit(chime_proto::RetryOn::SpawnError),
                    timeout_ms: Some(2 * HOUR as u64 + 500),
                    kill_grace_ms: 2_500,
                    max_output: 1536 * 1024,
                    keep_runs: 7,
                    retention_ms: 3 * 24 * HOUR as u64,
                    journal: true,
                    limits: ResourceLimits {
                        memory_max: Some(512 << 20),
                        cpu_quota_pct: Some(50),
                        tasks_max: Some(64),
                        io_weight: Some(200),
                    },
                    keep_children: true,
                    ..ctx.exec_defaults.clone()
                },
                ..base.clone()
            },
            Spec {
                exec: Exec {
                    retries: 0,
                    timeout_ms: Some(250),
                    limits: ResourceLimits {
                        memory_max: Some((1 << 20) + 1),
                        ..ResourceLimits::default()
                    },
                    ..ctx.exec_defaults.clone()
                },
                schedule: every,
                ..base
            },
        ]
    }

    #[test]
    fn a_rendered_job_file_parses_back_to_the_same_spec() {
        let ctx = ctx();
        for spec in specs() {
            for (name, uid) in [(Some("nightly-db"), 0), (None, 0), (Some("x"), 1000)] {
                let job = job(name, spec.clone());
                let (text, back) = round_trip(&job, &ctx, &editing(&job, uid, None));
                assert_eq!(back, spec, "--- the text:\n{text}");
                assert_eq!(back.revision(), Spec::of(&job).revision());
                // The header says which job it is and how to abort.
                assert!(text.starts_with("# chimectl edit: job 42"), "{text}");
                assert!(text.contains("empty the file"), "{text}");
                assert_eq!(text.contains("\nuser = \"root\"\n"), uid == 0, "{text}");
            }
        }
    }

    #[test]
    fn a_users_job_file_round_trips_within_their_limits() {
        let ctx = ctx();
        let bounds = Limits::defaults(0);
        for spec in specs() {
            let job = job(Some("mine"), spec);
            let mut within = Spec::of(&job);
            crate::spec::lower_to(&mut within.exec, &bounds);
            let job = job_with(&job, &within);
            let (text, back) = round_trip(&job, &ctx, &editing(&job, 1000, Some(&bounds)));
            assert_eq!(back, within, "--- the text:\n{text}");
        }
    }

    fn job_with(job: &Job, spec: &Spec) -> Job {
        Job {
            exec: spec.exec.clone(),
            ..job.clone()
        }
    }

    #[test]
    fn a_cron_job_always_carries_its_zone_and_times_their_offset() {
        let ctx = ctx();
        let now = crate::job::now_ms();
        let mut spec = specs().remove(0);
        spec.schedule = Schedule::Cron {
            expr: "0 3 * * *".into(),
            tz: None,
        };
        spec.until_ms = Some(now + 100 * 24 * HOUR);
        let job = job(Some("c"), spec.clone());
        let (text, back) = round_trip(&job, &ctx, &editing(&job, 0, None));
        assert!(
            text.contains("\ntz = \"Europe/Paris\"  # chimed's zone"),
            "{text}"
        );
        // The zone is now the job's own, by name; nothing else moved.
        assert_eq!(
            back.schedule,
            Schedule::Cron {
                expr: "0 3 * * *".into(),
                tz: Some("Europe/Paris".into())
            }
        );
        assert_eq!(back.until_ms, spec.until_ms);
        let until = text.lines().find(|l| l.starts_with("until = ")).unwrap();
        assert!(
            until.ends_with("+01:00\"") || until.ends_with("+02:00\""),
            "{until}"
        );
    }

    #[test]
    fn defaults_are_comments_and_set_values_keys() {
        let ctx = ctx();
        let job = job(Some("d"), specs().remove(0));
        let text = render(&job, &ctx, &editing(&job, 1000, None));
        assert!(text.contains("\n# retries = 2\n"), "{text}");
        assert!(text.contains("\n# timeout = \"1h\"\n"), "{text}");
        assert!(!text.contains("\nretries ="), "{text}");
        assert!(text.contains("\nqueue = \"default\"\n"), "{text}");
        assert!(text.contains("\ncatch_up = \"latest\"\n"), "{text}");
        // Uncommenting a default line gives a file that parses to the same job.
        let uncommented = text.replace("\n# retries = 2\n", "\nretries = 2\n");
        let edited =
            parse_edit("d.toml", &uncommented, &ctx, &editing(&job, 1000, None), 0).unwrap();
        assert_eq!(edited.exec, job.exec);
    }

    #[test]
    fn durations_and_instants_are_exact() {
        for ms in [0, 1, 999, 1000, 1001, 61_500, 90_061_007, 7 * 86_400_000] {
            let text = duration(ms);
            let back = chime_proto::human::parse_duration(&text).unwrap();
            assert_eq!(back.as_millis() as u64, ms, "{text}");
        }
        let zone = jiff::tz::TimeZone::get("America/New_York").unwrap();
        for ms in [0, 1_700_000_000_123, 1_699_164_000_000, -86_400_001] {
            let text = instant(ms, &zone);
            let back = chime_proto::human::parse_instant(&text, &jiff::tz::TimeZone::UTC).unwrap();
            assert_eq!(back.as_millisecond(), ms, "{text}");
        }
    }
}
