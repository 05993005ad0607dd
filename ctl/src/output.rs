//! Turning replies into text for people and JSON for scripts.
//!
//! The JSON shapes are a stable interface, documented in the README ("Scripting with --json"):
//! field names do not change, new fields may be added. Instants are RFC 3339 strings in UTC with
//! milliseconds; states and outcomes are lowercase words.

/// `println!` for chimectl's output: a closed stdout (`chimectl ls | head`) ends chimectl quietly
/// with status 0, as a Unix tool ends when its reader has read enough, instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`outln!`] for a line of `key  value` text (`show`, `status`): on a terminal, wrapped to its
/// width with the value's continuation lines under the value (see [`write_wrapped`]).
macro_rules! wline {
    ($($arg:tt)*) => {
        $crate::output::write_wrapped(&format!($($arg)*))
    };
}

/// [`outln!`] for a line that only confirms what was asked: nothing with `--quiet`.
macro_rules! confirm {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            outln!($($arg)*)
        }
    };
}

/// `print!` for chimectl's output (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

/// Writes to stdout; see [`outln!`].
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: set once, before any output.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(err) = std::io::stdout().lock().write_fmt(text) {
        quit_on(&err);
    }
}

/// Ends chimectl for an error writing to stdout: quietly when the reader went away (a closed
/// pipe), else with one line.
pub fn quit_on(err: &std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("chimectl: cannot write to stdout: {err}");
    std::process::exit(1);
}

use chime_proto::human::{format_duration, format_instant, rfc3339};
use chime_proto::{
    Command, JobDetail, JobState, JobSummary, Outcome, PauseInfo, RunInfo, RunUsage, ScheduleSpec,
};
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use std::time::Duration;

pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialize")
    );
}

pub fn time_json(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(rfc3339(ms)))
}

pub fn command_json(command: &Command) -> Value {
    match command {
        Command::Argv(argv) => json!({ "argv": argv }),
        Command::Shell(script) => json!({ "shell": script }),
        Command::Timer => json!({ "timer": true }),
    }
}

pub fn outcome_json(outcome: Option<&Outcome>) -> Value {
    outcome.map_or(Value::Null, |o| Value::String(o.as_str().into()))
}

pub fn pause_json(pause: Option<&PauseInfo>) -> Value {
    pause.map_or(Value::Null, |p| {
        json!({
            "since": time_json(Some(p.since_ms)),
            "until": time_json(p.until_ms),
            "reason": p.reason,
            "by_uid": p.by_uid,
        })
    })
}

/// A schedule as the fields that recreate it: `{"kind": "once", "at"}`, `{"kind": "every",
/// "interval_ms", "from"}`, `{"kind": "cron", "expr", "tz"}` (`tz` null: chimed's zone).
pub fn schedule_json(spec: &ScheduleSpec) -> Value {
    match spec {
        ScheduleSpec::Now => json!({ "kind": "once", "at": Value::Null }),
        ScheduleSpec::At(at) => json!({ "kind": "once", "at": time_json(Some(*at)) }),
        ScheduleSpec::After(ms) => json!({ "kind": "once", "after_ms": ms }),
        ScheduleSpec::Every {
            interval_ms,
            from_ms,
        } => json!({
            "kind": "every",
            "interval_ms": interval_ms,
            "from": time_json(*from_ms),
        }),
        ScheduleSpec::Cron { expr, tz } => json!({ "kind": "cron", "expr": expr, "tz": tz }),
    }
}

pub fn summary_json(job: &JobSummary) -> Value {
    json!({
        "id": job.id.0,
        "name": job.name,
        "owner_uid": job.owner_uid,
        "state": job.state.as_str(),
        "waiting_for": job.waiting_for,
        "command": command_json(&job.command),
        "created_at": time_json(Some(job.created_at_ms)),
        "due_at": time_json(job.next_due_ms),
        "next_due_at": time_json(job.next_due_ms),
        "since": time_json(job.since_ms),
        "last_outcome": outcome_json(job.last_outcome.as_ref()),
        "last_exit_code": job.last_outcome.as_ref().and_then(Outcome::exit_code),
        "last_signal": job.last_outcome.as_ref().and_then(Outcome::signal),
        "queue": job.queue,
        "schedule": schedule_json(&job.schedule_spec),
        "schedule_text": job.schedule,
        "pause": pause_json(job.pause.as_ref()),
        "runs_started": job.runs_started,
        "owed": job.owed,
    })
}

pub fn run_json(run: &RunInfo) -> Value {
    let error = match &run.outcome {
        Some(Outcome::SpawnError(why)) => Some(why.clone()),
        _ => None,
    };
    json!({
        "run_id": run.run.0,
        "attempt": run.attempt,
        "outcome": outcome_json(run.outcome.as_ref()),
        "exit_code": run.outcome.as_ref().and_then(Outcome::exit_code),
        "signal": run.outcome.as_ref().and_then(Outcome::signal),
        "error": error,
        "due_at": time_json(Some(run.due_at_ms)),
        "started_at": time_json(Some(run.started_at_ms)),
        "finished_at": time_json(run.finished_at_ms),
        "pid": run.pid,
        "output_bytes": run.output_bytes,
        "usage": usage_json(run.usage.as_ref()),
        "ended_at_start": run.ended_at_start,
    })
}

/// A run's usage for scripts: the figures as numbers, in the units of their names (`null` for a
/// figure this host does not keep, and for a run without usage).
pub fn usage_json(usage: Option<&RunUsage>) -> Value {
    usage.map_or(Value::Null, |u| {
        json!({
            "cpu_user_us": u.cpu_user_us,
            "cpu_system_us": u.cpu_system_us,
            "memory_peak_bytes": u.memory_peak_bytes,
            "io_read_bytes": u.io_read_bytes,
            "io_write_bytes": u.io_write_bytes,
        })
    })
}

/// A run's usage for people: `cpu 1.20 s user + 0.03 s system, peak memory 45.2 MiB, io
/// 1.2 MiB read / 0 B written`. A figure this host does not keep is left out.
pub fn describe_usage(usage: &RunUsage) -> String {
    let seconds = |us: u64| format!("{:.2} s", us as f64 / 1e6);
    let mut parts = vec![format!(
        "cpu {} user + {} system",
        seconds(usage.cpu_user_us),
        seconds(usage.cpu_system_us)
    )];
    if let Some(peak) = usage.memory_peak_bytes {
        parts.push(format!("peak memory {}", approx_bytes(peak)));
    }
    match (usage.io_read_bytes, usage.io_write_bytes) {
        (Some(read), Some(written)) => parts.push(format!(
            "io {} read / {} written",
            approx_bytes(read),
            approx_bytes(written)
        )),
        (Some(read), None) => parts.push(format!("io {} read", approx_bytes(read))),
        (None, Some(written)) => parts.push(format!("io {} written", approx_bytes(written))),
        (None, None) => {}
    }
    parts.join(", ")
}

/// A size for people, to one decimal in the largest binary unit it reaches: `0 B`, `512 B`,
/// `1.5 KiB`, `45.2 MiB`.
pub fn approx_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Everything `show --json` prints about a job.
pub fn detail_json(detail: &JobDetail) -> Value {
    let mut value = summary_json(&detail.summary);
    let object = value.as_object_mut().expect("summaries are objects");
    object.insert("cwd".into(), json!(detail.cwd));
    object.insert(
        "env".into(),
        Value::Object(
            detail
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    object.insert("cancel_requested".into(), json!(detail.cancelling));
    object.insert("count".into(), json!(detail.count));
    object.insert("until".into(), time_json(detail.until_ms));
    object.insert(
        "catch_up".into(),
        json!(match detail.catch_up {
            chime_proto::CatchUpPolicy::Skip => "skip",
            chime_proto::CatchUpPolicy::Latest => "latest",
            chime_proto::CatchUpPolicy::All { .. } => "all",
        }),
    );
    if let chime_proto::CatchUpPolicy::All { limit } = detail.catch_up {
        object.insert("catch_up_limit".into(), json!(limit));
    }
    object.insert("deadline_ms".into(), json!(detail.deadline_ms));
    object.insert("overlap".into(), json!(detail.overlap.as_str()));
    object.insert(
        "owed_due_at".into(),
        Value::Array(detail.owed.iter().map(|t| time_json(Some(*t))).collect()),
    );
    object.insert("missed_total".into(), json!(detail.missed_total));
    object.insert(
        "missed".into(),
        Value::Array(
            detail
                .missed
                .iter()
                .map(|m| {
                    json!({
                        "due_at": time_json(Some(m.due_at_ms)),
                        "decided_at": time_json(Some(m.decided_at_ms)),
                        "reason": m.reason,
                    })
                })
                .collect(),
        ),
    );
    object.insert(
        "runs".into(),
        Value::Array(detail.runs.iter().map(run_json).collect()),
    );
    let e = &detail.exec;
    object.insert("retries".into(), json!(e.retries));
    object.insert("backoff_base_ms".into(), json!(e.backoff_base_ms));
    object.insert("backoff_max_ms".into(), json!(e.backoff_max_ms));
    object.insert(
        "retry_on".into(),
        json!(e.retry_on.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
    );
    object.insert("timeout_ms".into(), json!(e.timeout_ms));
    object.insert("kill_grace_ms".into(), json!(e.kill_grace_ms));
    object.insert("max_output".into(), json!(e.max_output));
    object.insert("keep_runs".into(), json!(e.keep_runs));
    object.insert("retention_ms".into(), json!(e.retention_ms));
    object.insert("limits".into(), limits_json(&e.limits));
    object.insert("keep_children".into(), json!(e.keep_children));
    object.insert("next_retry_at".into(), time_json(detail.next_retry_ms));
    object.insert(
        "output".into(),
        (if detail.journal { "journal" } else { "file" }).into(),
    );
    object.insert("source".into(), json!(detail.source));
    value
}

/// The resources a run may take, as `show --json` and `queue ls --json` print them: each
/// limit's number (bytes, percent of one CPU, tasks, weight), or null when none is set.
pub fn limits_json(limits: &chime_proto::ResourceLimits) -> Value {
    json!({
        "memory_max": limits.memory_max,
        "cpu_quota_pct": limits.cpu_quota_pct,
        "tasks_max": limits.tasks_max,
        "io_weight": limits.io_weight,
    })
}

/// A pause for people: `paused until 14:00 (maintenance)`.
pub fn describe_pause(pause: &PauseInfo, tz: &TimeZone) -> String {
    let mut out = String::from("paused");
    match pause.until_ms {
        Some(until) => out.push_str(&format!(" until {}", format_instant(until, tz))),
        None => out.push_str(" until resumed"),
    }
    if let Some(reason) = &pause.reason {
        out.push_str(&format!(" ({reason})"));
    }
    out
}

/// The local time zone for people.
pub fn local_tz() -> TimeZone {
    TimeZone::system()
}

pub fn when(ms: Option<i64>, tz: &TimeZone) -> String {
    ms.map_or_else(|| "-".into(), |ms| format_instant(ms, tz))
}

pub fn duration_between(start: i64, end: Option<i64>) -> String {
    match end {
        Some(end) if end >= start => format_duration(Duration::from_millis((end - start) as u64)),
        _ => "-".into(),
    }
}

/// A user name for a uid, or the number.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// Whether people get colours: only when stdout is a terminal, and never with `NO_COLOR` set
/// to anything (<https://no-color.org>) or `TERM=dumb`. Pipes, files and `--json` never do.
pub fn colours() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        use std::io::IsTerminal;
        std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
    })
}

/// What a state or an outcome means to someone scanning a table, as a colour: as systemctl
/// shows units, green for done well, red for failed, yellow for held back, cyan for running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Held,
    Active,
}

impl Tone {
    pub fn of_state(state: JobState) -> Option<Self> {
        match state {
            JobState::Succeeded => Some(Self::Good),
            JobState::Failed | JobState::Damaged => Some(Self::Bad),
            JobState::Paused | JobState::Queued => Some(Self::Held),
            JobState::Running => Some(Self::Active),
            JobState::Scheduled | JobState::Cancelled => None,
        }
    }

    pub fn of_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Exited(0) | Outcome::Fired => Self::Good,
            _ => Self::Bad,
        }
    }

    fn ansi(self) -> anstyle::AnsiColor {
        match self {
            Self::Good => anstyle::AnsiColor::Green,
            Self::Bad => anstyle::AnsiColor::Red,
            Self::Held => anstyle::AnsiColor::Yellow,
            Self::Active => anstyle::AnsiColor::Cyan,
        }
    }

    fn table_colour(self) -> comfy_table::Color {
        match self {
            Self::Good => comfy_table::Color::DarkGreen,
            Self::Bad => comfy_table::Color::DarkRed,
            Self::Held => comfy_table::Color::DarkYellow,
            Self::Active => comfy_table::Color::DarkCyan,
        }
    }
}

/// `text` in `tone`'s colour where people get colours ([`colours`]); as it is otherwise.
pub fn paint(text: &str, tone: Option<Tone>) -> String {
    match tone.filter(|_| colours()) {
        Some(tone) => {
            let style = tone.ansi().on_default();
            format!("{style}{text}{style:#}")
        }
        None => text.to_owned(),
    }
}

/// A table cell in `tone`'s colour where people get colours: the table measures the text, not
/// the escapes.
pub fn cell(text: String, tone: Option<Tone>) -> comfy_table::Cell {
    let cell = comfy_table::Cell::new(text);
    match tone.filter(|_| colours()) {
        Some(tone) => cell.fg(tone.table_colour()),
        None => cell,
    }
}

/// A table with a header row and no borders, like `ps`. Print it with [`print_table`].
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    // Styled exactly where [`colours`] says, whatever comfy-table would guess.
    if colours() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().map(comfy_table::Cell::new));
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Prints a table without the spaces that pad its last column.
pub fn print_table(table: &comfy_table::Table) {
    for line in table.to_string().lines() {
        outln!("{}", line.trim_end());
    }
}

/// The width to fit tables to: the terminal's, when stdout is one (`COLUMNS` where set wins);
/// `None` when the output goes elsewhere (a pipe or a file gets every column in full).
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(columns);
    }
    comfy_table::Table::new().width().map(usize::from)
}

/// Prints `line`, wrapped at word boundaries to the terminal's width when it is one; a
/// continuation line starts under the value (after the leading key and the spaces after it).
pub fn write_wrapped(line: &str) {
    write_wrapped_toned(line, 0..0, None);
}

/// [`write_wrapped`], with the bytes `toned` of the line (within its first line once wrapped:
/// a state word after its key) in `tone`'s colour.
pub fn write_wrapped_toned(line: &str, toned: std::ops::Range<usize>, tone: Option<Tone>) {
    let parts = match terminal_width() {
        Some(width) => wrap(line, width),
        None => vec![line.to_owned()],
    };
    for (i, part) in parts.iter().enumerate() {
        match part.get(toned.clone()) {
            Some(word) if i == 0 && tone.is_some() => outln!(
                "{}{}{}",
                &part[..toned.start],
                paint(word, tone),
                &part[toned.end..]
            ),
            _ => outln!("{part}"),
        }
    }
}

/// `line` cut into lines of at most `width` characters where it can be (a word longer than the
/// room is left whole), continuation lines indented to where the first line's value starts.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    if line.chars().count() <= width {
        return vec![line.to_owned()];
    }
    let lead = line.len() - line.trim_start().len();
    let rest = &line[lead..];
    // `  key      value`: the value starts after the key and the spaces after it (a key may
    // hold a space, `per user`: two spaces end it, where there are two early in the line).
    let key_end = rest
        .find("  ")
        .filter(|at| *at <= 16)
        .or_else(|| rest.find(' '));
    let hang = match key_end {
        Some(key_end) => {
            let gap = rest[key_end..].len() - rest[key_end..].trim_start().len();
            lead + key_end + gap
        }
        None => lead + 2,
    };
    let hang = if hang * 2 > width { lead + 2 } else { hang };
    let mut out = Vec::new();
    let mut current = line[..lead].to_owned();
    for word in rest.split(' ') {
        let extra = if current.trim().is_empty() { 0 } else { 1 };
        if !current.trim().is_empty()
            && current.chars().count() + extra + word.chars().count() > width
        {
            out.push(current.trim_end().to_owned());
            current = " ".repeat(hang);
            current.push_str(word);
            continue;
        }
        if extra == 1 {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push(current.trim_end().to_owned());
    out
}

/// An instant for a table on a terminal: `11-30 18:15:10` (month, day, time, in `tz`); `-` for
/// none. Elsewhere tables have [`when`]'s full form.
pub fn when_short(ms: Option<i64>, tz: &TimeZone) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || "-".into(),
            |ts| {
                ts.to_zoned_datetime(tz.clone())
                    .strftime("%m-%d %H:%M:%S")
                    .to_string()
            },
        )
}

/// An instant relative to now, as people read a listing: `in 5m`, `2h ago`, `now`.
pub fn relative(ms: Option<i64>, now_ms: i64) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let gap = ms - now_ms;
    let span = Duration::from_millis(gap.unsigned_abs());
    if span < Duration::from_secs(1) {
        return "now".into();
    }
    // The two largest units: `1d 3h`, `5m 20s`.
    let secs = span.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let text = match (days, hours, minutes) {
        (d, h, _) if d > 0 => format!("{d}d {h}h"),
        (_, h, m) if h > 0 => format!("{h}h {m}m"),
        (_, _, m) if m > 0 => format!("{m}m {seconds}s"),
        _ => format!("{seconds}s"),
    };
    let text = text
        .trim_end_matches(" 0h")
        .trim_end_matches(" 0m")
        .trim_end_matches(" 0s");
    if gap > 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Trims a command for a table cell.
pub fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.into()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_wraps_under_its_value() {
        let line = "  execution retries 1 (backoff 10s:1h, on exit,killed), kill grace 10s";
        assert_eq!(
            wrap(line, 40),
            [
                "  execution retries 1 (backoff 10s:1h,",
                "            on exit,killed), kill grace",
                "            10s",
            ]
        );
        assert_eq!(
            wrap("  per user   alpha, beta, gamma, delta", 30),
            ["  per user   alpha, beta,", "             gamma, delta"]
        );
        assert_eq!(wrap("short", 80), ["short"]);
    }
    use chime_proto::RunId;

    fn usage() -> RunUsage {
        RunUsage {
            cpu_user_us: 1_204_000,
            cpu_system_us: 30_000,
            memory_peak_bytes: Some(47_395_635),
            io_read_bytes: Some(1_258_291),
            io_write_bytes: Some(0),
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            run: RunId(7),
            attempt: 1,
            due_at_ms: 0,
            started_at_ms: 0,
            finished_at_ms: Some(1000),
            pid: Some(42),
            outcome: Some(Outcome::Exited(0)),
            output_bytes: 0,
            usage: None,
            ended_at_start: None,
        }
    }

    #[test]
    fn sizes_for_people_take_the_largest_unit_reached() {
        assert_eq!(approx_bytes(0), "0 B");
        assert_eq!(approx_bytes(1023), "1023 B");
        assert_eq!(approx_bytes(1024), "1.0 KiB");
        assert_eq!(approx_bytes(1536), "1.5 KiB");
        assert_eq!(approx_bytes(47_395_635), "45.2 MiB");
        assert_eq!(approx_bytes(3 << 30), "3.0 GiB");
        assert_eq!(approx_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn usage_for_people_gives_every_figure_kept() {
        assert_eq!(
            describe_usage(&usage()),
            "cpu 1.20 s user + 0.03 s system, peak memory 45.2 MiB, io 1.2 MiB read / 0 B written"
        );
    }

    #[test]
    fn usage_for_people_leaves_out_figures_not_kept() {
        let bare = RunUsage {
            cpu_user_us: 0,
            cpu_system_us: 5_000,
            ..RunUsage::default()
        };
        assert_eq!(describe_usage(&bare), "cpu 0.00 s user + 0.01 s system");
        let written = RunUsage {
            io_write_bytes: Some(2048),
            ..bare.clone()
        };
        assert_eq!(
            describe_usage(&written),
            "cpu 0.00 s user + 0.01 s system, io 2.0 KiB written"
        );
        let read = RunUsage {
            io_read_bytes: Some(10),
            ..bare
        };
        assert_eq!(
            describe_usage(&read),
            "cpu 0.00 s user + 0.01 s system, io 10 B read"
        );
    }

    #[test]
    fn a_runs_json_carries_its_usage_as_numbers() {
        let value = run_json(&RunInfo {
            usage: Some(usage()),
            ..run()
        });
        assert_eq!(
            value["usage"],
            json!({
                "cpu_user_us": 1_204_000,
                "cpu_system_us": 30_000,
                "memory_peak_bytes": 47_395_635,
                "io_read_bytes": 1_258_291,
                "io_write_bytes": 0,
            })
        );
        assert_eq!(value["ended_at_start"], Value::Null);
        let partial = run_json(&RunInfo {
            usage: Some(RunUsage::default()),
            ..run()
        });
        assert_eq!(partial["usage"]["memory_peak_bytes"], Value::Null);
        assert_eq!(partial["usage"]["cpu_user_us"], json!(0));
    }

    #[test]
    fn a_runs_json_without_usage_has_null_and_keeps_its_fields() {
        let value = run_json(&run());
        assert_eq!(value["usage"], Value::Null);
        assert_eq!(value["exit_code"], json!(0));
        assert_eq!(value["run_id"], json!(7));
    }

    #[test]
    fn a_lost_runs_json_says_what_was_ended_at_start() {
        let value = run_json(&RunInfo {
            outcome: Some(Outcome::Lost),
            ended_at_start: Some(3),
            ..run()
        });
        assert_eq!(value["ended_at_start"], json!(3));
        assert_eq!(value["outcome"], json!("lost"));
    }

    #[test]
    fn an_oom_kill_is_a_word_in_json_with_no_exit_code_or_signal() {
        let value = run_json(&RunInfo {
            outcome: Some(Outcome::OomKilled),
            ..run()
        });
        assert_eq!(value["outcome"], json!("oom_killed"));
        assert_eq!(value["exit_code"], Value::Null);
        assert_eq!(value["signal"], Value::Null);
    }
}
