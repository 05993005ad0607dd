//! `chimectl add`

use crate::cli::{AddArgs, ResourceArgs, ScheduleArgs};
use crate::client::Client;
use crate::output::{print_json, time_json};
use anyhow::{Context, anyhow, bail};
use chime_proto::human::{parse_cpu_quota, parse_duration, parse_instant, parse_size};
use chime_proto::{
    Added, CatchUpPolicy, Command, ExecSpec, JobSpec, OverlapPolicy, Request, ResourceLimits,
    Response, RetryOn, ScheduleSpec, SubmitJob,
};
use serde_json::json;

/// Sends a spec built by [`spec`] and prints the new id; with `wait`, waits for its first run
/// and returns that run's exit status.
pub async fn submit(
    client: &mut Client,
    spec: SubmitJob,
    wait: bool,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let name = spec.job.name.clone();
    // `--replace`: what the job was, to say what changed.
    let before = match (&name, spec.job.replace) {
        (Some(name), true) => show(client, name).await,
        _ => None,
    };
    let Response::Added(added) = client.call(Request::Submit(Box::new(spec))).await? else {
        bail!("chimed answered add with something else");
    };
    if !wait {
        let changed = match (&before, &name) {
            (Some(before), Some(name)) => {
                Some(changed_since(client, before, chime_proto::JobRef::Name(name.clone())).await)
            }
            _ => None,
        };
        print_added(&added, name.as_deref(), changed.as_deref(), json);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("chimectl: job {} added; waiting for its run", added.id);
    }
    // Any run of a new job counts, even one that ended before the wait arrived.
    crate::commands::wait::wait(
        client,
        chime_proto::JobRef::Id(added.id),
        Some(0),
        None,
        json,
    )
    .await
}

/// The job named `name`, if there is one (and it is yours).
async fn show(client: &mut Client, name: &str) -> Option<chime_proto::JobDetail> {
    shown(client, chime_proto::JobRef::Name(name.to_owned())).await
}

/// The job `job`, if there is one (and you may see it).
pub async fn shown(
    client: &mut Client,
    job: chime_proto::JobRef,
) -> Option<chime_proto::JobDetail> {
    match client.call(Request::Show(job)).await {
        Ok(Response::Job(detail)) => Some(*detail),
        _ => None,
    }
}

/// A field a replace changed: (field, before, after), in words.
pub type Change = (&'static str, String, String);

/// What a replace of `job` changed since it was `before` (`add --replace`, `edit`).
pub async fn changed_since(
    client: &mut Client,
    before: &chime_proto::JobDetail,
    job: chime_proto::JobRef,
) -> Vec<Change> {
    shown(client, job)
        .await
        .map(|after| changes(before, &after))
        .unwrap_or_default()
}

/// Prints a stored job: its id, and with `changed` (a replace), what changed, one field a line
/// (`replaced job N: nothing changed` when nothing did). `--json`: `{id, name, due_at}`, with
/// `changed: [{field, from, to}]` for a replace.
pub fn print_added(added: &Added, name: Option<&str>, changed: Option<&[Change]>, json: bool) {
    if json {
        let mut reply = json!({
            "id": added.id.0,
            "name": name,
            "due_at": time_json(Some(added.due_at_ms)),
        });
        if let Some(changed) = changed {
            reply["changed"] = changed
                .iter()
                .map(|(field, from, to)| json!({"field": field, "from": from, "to": to}))
                .collect();
        }
        print_json(&reply);
        return;
    }
    outln!("{}", added.id);
    if let Some(changed) = changed {
        if changed.is_empty() {
            outln!("replaced job {}: nothing changed", added.id);
        }
        for (field, from, to) in changed {
            outln!("  {field}: {from} -> {to}");
        }
    }
}

/// What `--replace` changed, in words: (field, before, after).
fn changes(before: &chime_proto::JobDetail, after: &chime_proto::JobDetail) -> Vec<Change> {
    let tz = crate::output::local_tz();
    // By name: the order of distinct names changes nothing (a job file's is sorted).
    let env = |d: &chime_proto::JobDetail| {
        let mut entries: Vec<String> = d.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        entries.sort();
        entries.join(" ")
    };
    let fields: [(&'static str, String, String); 9] = [
        (
            "schedule",
            before.summary.schedule.clone(),
            after.summary.schedule.clone(),
        ),
        (
            "command",
            before.summary.command.to_string(),
            after.summary.command.to_string(),
        ),
        (
            "queue",
            before.summary.queue.clone(),
            after.summary.queue.clone(),
        ),
        ("cwd", before.cwd.clone(), after.cwd.clone()),
        ("env", env(before), env(after)),
        (
            "count",
            format!("{:?}", before.count),
            format!("{:?}", after.count),
        ),
        (
            "until",
            crate::output::when(before.until_ms, &tz),
            crate::output::when(after.until_ms, &tz),
        ),
        (
            "next",
            crate::output::when(before.summary.next_due_ms, &tz),
            crate::output::when(after.summary.next_due_ms, &tz),
        ),
        ("execution", execution(&before.exec), execution(&after.exec)),
    ];
    fields
        .into_iter()
        .filter(|(_, from, to)| from != to)
        .collect()
}

/// A job's execution settings, in a line, for what `--replace` changed.
fn execution(e: &chime_proto::ExecInfo) -> String {
    use chime_proto::human::format_duration;
    let d = |ms: u64| format_duration(std::time::Duration::from_millis(ms));
    format!(
        "retries {}, timeout {}, kill grace {}, output cap {}, resources {}{}",
        e.retries,
        e.timeout_ms.map_or("none".into(), d),
        d(e.kill_grace_ms),
        chime_proto::human::format_size(e.max_output),
        e.limits.describe(),
        if e.keep_children {
            ", keeps children"
        } else {
            ""
        }
    )
}

fn ms(duration: std::time::Duration, flag: &str) -> anyhow::Result<u64> {
    u64::try_from(duration.as_millis()).with_context(|| format!("{flag}: the duration is too long"))
}

/// Your time zone's name (`TZ`, else the system's `/etc/localtime`), for a cron schedule given
/// without `--tz`: the same zone `--at` and `--from` times are read in, recorded with the job so
/// that its times do not move with chimed's zone. `None` when the zone has no IANA name (a POSIX
/// `TZ` string): then the job runs in chimed's zone, and says so.
pub fn your_zone() -> Option<String> {
    jiff::tz::TimeZone::system().iana_name().map(str::to_owned)
}

pub fn instant(text: &str, flag: &str) -> anyhow::Result<i64> {
    parse_instant(text, &jiff::tz::TimeZone::system())
        .map(|t| t.as_millisecond())
        .map_err(|e| anyhow!("{flag}: {e}"))
}

pub fn duration(text: &str, flag: &str) -> anyhow::Result<u64> {
    let d = parse_duration(text).map_err(|e| anyhow!("{flag}: {e}"))?;
    ms(d, flag)
}

/// The execution part of a spec.
fn exec(args: &AddArgs) -> anyhow::Result<ExecSpec> {
    let (backoff_base_ms, backoff_max_ms) = match args.backoff.as_deref() {
        None => (None, None),
        Some(text) => {
            let (base, max) = match text.split_once(':') {
                Some((base, max)) => (base, Some(max)),
                None => (text, None),
            };
            let base = duration(base, "--backoff")?;
            let max = max.map(|m| duration(m, "--backoff")).transpose()?;
            (Some(base), max)
        }
    };
    let retry_on = args
        .retry_on
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|word| {
                    RetryOn::from_word(word.trim()).ok_or_else(|| {
                        anyhow!("--retry-on {word:?}: use exit, killed, timed_out, lost, interrupted or spawn_error")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    let timeout_ms = args
        .timeout
        .as_deref()
        .map(|t| duration(t, "--timeout"))
        .transpose()?;
    let max_output = args
        .max_output
        .as_deref()
        .map(|m| parse_size(m).map_err(|e| anyhow!("--max-output: {e}")))
        .transpose()?;
    Ok(ExecSpec {
        retries: args.retries,
        backoff_base_ms,
        backoff_max_ms,
        retry_on,
        timeout_ms,
        kill_grace_ms: args
            .kill_grace
            .as_deref()
            .map(|g| duration(g, "--kill-grace"))
            .transpose()?,
        max_output,
        keep_runs: args.keep_runs,
        retention_ms: args
            .retention
            .as_deref()
            .map(|r| duration(r, "--retention"))
            .transpose()?,
        limits: resource_limits(&args.resources)?,
        keep_children: args.keep_children.then_some(true),
    })
}

/// The resource limits of `add` or `queue set`, their syntax checked (the rules are chimed's).
pub fn resource_limits(args: &ResourceArgs) -> anyhow::Result<ResourceLimits> {
    Ok(ResourceLimits {
        memory_max: args
            .memory_max
            .as_deref()
            .map(|m| parse_size(m).map_err(|e| anyhow!("--memory-max: {e}")))
            .transpose()?,
        cpu_quota_pct: args
            .cpu_quota
            .as_deref()
            .map(|c| parse_cpu_quota(c).map_err(|e| anyhow!("--cpu-quota: {e}")))
            .transpose()?,
        tasks_max: args.tasks_max,
        io_weight: args.io_weight,
    })
}

/// The schedule and recurring policies of a job or timer, checked.
#[derive(Debug)]
pub struct When {
    pub schedule: ScheduleSpec,
    pub count: Option<u32>,
    pub until_ms: Option<i64>,
    pub catch_up: Option<CatchUpPolicy>,
    pub deadline_ms: Option<u64>,
    pub overlap: Option<OverlapPolicy>,
}

impl When {
    /// A job spec on this schedule: `command` run in `cwd`, nothing else set.
    pub fn job(self, command: Command, cwd: String) -> JobSpec {
        JobSpec {
            count: self.count,
            until_ms: self.until_ms,
            catch_up: self.catch_up,
            deadline_ms: self.deadline_ms,
            overlap: self.overlap,
            ..JobSpec::new(command, cwd, self.schedule)
        }
    }
}

/// Reads the schedule options. Only their syntax is checked here: every rule of a job spec is
/// chimed's (`chime_daemon::spec`), and its refusal names the field, shown as its option.
pub fn when(args: &ScheduleArgs) -> anyhow::Result<When> {
    let now = jiff::Timestamp::now().as_millisecond();
    let schedule = if let Some(at) = &args.at {
        let at_ms = instant(at, "--at")?;
        if at_ms < now - 1000 {
            bail!("--at {at:?}: that time is in the past; leave out --at to run now");
        }
        ScheduleSpec::At(at_ms)
    } else if let Some(delay) = &args.delay {
        ScheduleSpec::After(duration(delay, "--in")?)
    } else if let Some(every) = &args.every {
        ScheduleSpec::Every {
            interval_ms: duration(every, "--every")?,
            from_ms: args
                .from
                .as_deref()
                .map(|f| instant(f, "--from"))
                .transpose()?,
        }
    } else if let Some(cron) = &args.cron {
        ScheduleSpec::Cron {
            expr: cron.clone(),
            tz: args.tz.clone().or_else(your_zone),
        }
    } else {
        ScheduleSpec::Now
    };
    let until_ms = args
        .until
        .as_deref()
        .map(|u| instant(u, "--until"))
        .transpose()?;
    let catch_up = match args.catch_up.as_deref() {
        None if args.catch_up_limit.is_some() => {
            bail!("--catch-up-limit needs --catch-up all")
        }
        None => None,
        Some("skip") => Some(CatchUpPolicy::Skip),
        Some("latest") => Some(CatchUpPolicy::Latest),
        Some("all") => Some(CatchUpPolicy::All {
            limit: args.catch_up_limit.unwrap_or(100),
        }),
        Some(other) => bail!("--catch-up {other:?}: use skip, latest or all"),
    };
    if args.catch_up_limit.is_some() && !matches!(catch_up, Some(CatchUpPolicy::All { .. })) {
        bail!("--catch-up-limit needs --catch-up all");
    }
    let overlap = match args.overlap.as_deref() {
        None => None,
        Some("skip") => Some(OverlapPolicy::Skip),
        Some("queue") => Some(OverlapPolicy::Queue),
        Some("allow") => Some(OverlapPolicy::Allow),
        Some("replace") => Some(OverlapPolicy::Replace),
        Some(other) => bail!("--overlap {other:?}: use skip, queue, allow or replace"),
    };
    let deadline_ms = args
        .deadline
        .as_deref()
        .map(|d| duration(d, "--deadline"))
        .transpose()?;
    Ok(When {
        schedule,
        count: args.count,
        until_ms,
        catch_up,
        deadline_ms,
        overlap,
    })
}

/// Builds the job spec from the options (their syntax checked; the rules are chimed's).
pub fn spec(args: AddArgs) -> anyhow::Result<SubmitJob> {
    let exec = exec(&args)?;
    let when = when(&args.when)?;
    let command = if args.shell {
        Command::Shell(args.command.join(" "))
    } else {
        let mut argv = args.command;
        if !argv[0].contains('/') {
            argv[0] = your_program(&argv[0]).with_context(|| {
                format!("command not found: {:?} (searched your PATH); give its full path, or use --shell", argv[0])
            })?;
        }
        Command::Argv(argv)
    };
    let cwd = match args.cwd {
        Some(dir) => std::path::absolute(&dir)
            .with_context(|| format!("--cwd {}: cannot make it absolute", dir.display()))?,
        None => std::env::current_dir().context("cannot read the current directory; give --cwd")?,
    };
    let cwd = cwd
        .to_str()
        .with_context(|| format!("working directory {} is not valid UTF-8", cwd.display()))?
        .to_owned();
    let mut env: Vec<(String, String)> = Vec::new();
    if args.env_inherit {
        env.extend(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        );
    }
    for entry in &args.env {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("--env {entry:?}: expected KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--env {entry:?}: the name before '=' is empty");
        }
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }
    Ok(SubmitJob {
        job: JobSpec {
            name: args.name,
            env,
            queue: args.queue,
            replace: args.replace,
            ..when.job(command, cwd)
        },
        exec,
        journal: args.output == "journal",
    })
}

/// `program` found in your `PATH`, as an absolute path.
fn your_program(program: &str) -> Option<String> {
    let found = chime_proto::human::find_in_path(program, &std::env::var("PATH").ok()?)?;
    std::path::absolute(found).ok()?.to_str().map(str::to_owned)
}
