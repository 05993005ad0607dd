//! Job files: one declared job per `jobs.d/NAME.toml`, named after the file.
//!
//! ```toml
//! # /etc/chime/jobs.d/backup.toml: the job "backup"
//! command = ["/usr/local/bin/backup", "--full"]   # or: shell = "pg_dump db | gzip > /b/db.gz"
//!                                                # or: timer = true (nothing runs; an event)
//! cron = "30 2 * * *"          # or: every = "15m" (from = "2026-01-01 00:00"), or at = "..."
//! tz = "Europe/Paris"
//! user = "backup"              # root's files only: whom the job runs as (default root)
//! cwd = "/srv"                 # default: the user's home directory
//! env = { LANG = "C.UTF-8" }
//! queue = "backups"
//! count = 10
//! until = "2027-01-01 00:00"
//! catch_up = "all"             # skip, latest (default) or all
//! catch_up_limit = 3
//! overlap = "queue"            # skip (default), queue, allow or replace
//! deadline = "10m"
//! retries = 3                  # and backoff, retry_on, timeout, kill_grace, max_output,
//! timeout = "2h"               # keep_runs, journal as in [defaults] (a declared job is kept
//!                              # while its file exists: no retention)
//! memory_max = "512M"          # and cpu_quota = "50%", tasks_max = 64, io_weight = 200: over
//!                              # the queue's and [defaults]' (each needs its cgroup controller)
//! keep_children = true         # leave what the run starts running when it exits
//! ```
//!
//! A file is checked completely before anything is applied: an unknown key, a value of the wrong
//! type, a schedule that does not parse, a user that does not exist or a program that cannot be
//! found is reported as `PATH:LINE: field: what is wrong`, and the file's previous job (if any)
//! stays as it was.
//!
//! Before any text is looked at, the file and `jobs.d` pass [`super::trust`]: `jobs.d` is listed
//! through a checked descriptor and each file opened once relative to it, so a symbolic link, a
//! FIFO, a file that others may write, or a `jobs.d` (or a directory above it) that someone
//! other than root or chimed's user could change, is refused (`PATH:0: ...`); a refused
//! `jobs.d` refuses all its files at once and keeps their jobs as they were.
//!
//! The same format, written by [`render`], is how `chimectl edit` shows a job added with
//! chimectl; the edited text comes back through [`parse_edit`], which is [`parse`] with the
//! rules of an edit ([`Editing`]): the job keeps its name and owner, `user` is root's only and
//! must name the owner, `retention` is allowed (such a job is not kept by a file), and a user's
//! settings are held to the administrator's `[limits]` as `chimectl add` is.

pub mod render;

use super::defaults::{RawDefaults, job_settings, unsigned};
use super::trust::{self, Kind};
use super::{FileError, LoadContext, Text};
use crate::job::Exec;
use crate::limits::Limits;
use chime_proto::{
    CatchUpPolicy, Command, ErrorReply, JobSpec, OverlapPolicy, ScheduleSpec, SpecField,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// Most job files read from one directory.
pub const FILES_MAX: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    command: Option<Spanned<Vec<String>>>,
    shell: Option<Spanned<String>>,
    timer: Option<Spanned<bool>>,
    cron: Option<Spanned<String>>,
    tz: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    at: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    cwd: Option<Spanned<String>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    queue: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    until: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    catch_up_limit: Option<Spanned<i64>>,
    overlap: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    retry_on: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    keep_runs: Option<Spanned<i64>>,
    retention: Option<Spanned<String>>,
    journal: Option<bool>,
    memory_max: Option<Spanned<String>>,
    cpu_quota: Option<Spanned<String>>,
    tasks_max: Option<Spanned<i64>>,
    io_weight: Option<Spanned<i64>>,
    keep_children: Option<bool>,
}

/// A job as a file declares it, checked, with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The job file.
    pub path: String,
    pub name: String,
    /// The uid it runs as, and its account name.
    pub owner: u32,
    pub owner_name: String,
    pub job: JobSpec,
    pub exec: Exec,
    /// An encoding of all of the above: the job is updated when it changes.
    pub digest: Vec<u8>,
    /// Nothing would run as of the check (an `until` past, or before the next occurrence),
    /// placed at its key and line: a new or changed declaration is refused for it when
    /// applied, but a job the same declaration made earlier is left as it is (it has run out,
    /// which is no error). Not part of the digest.
    pub stale: Option<FileError>,
}

/// Reads every `*.toml` file in `dir` (none if it does not exist), through checked directories
/// ([`trust::open_dir`]). Returns the jobs of the files that passed, and an error for each file
/// that did not (or one for `dir`, when it was refused as a whole).
pub fn read_dir(dir: &Path, ctx: &LoadContext) -> (Vec<Declared>, Vec<FileError>) {
    match trust::open_dir(dir, ctx.daemon_uid) {
        Ok(Some(dir)) => read_in(&dir, ctx),
        Ok(None) => (Vec::new(), Vec::new()),
        Err(err) => (Vec::new(), vec![err]),
    }
}

/// Reads every `*.toml` file (not hidden) of the checked directory `dir`, in the order of their
/// names, each opened relative to it.
pub fn read_in(dir: &trust::Dir, ctx: &LoadContext) -> (Vec<Declared>, Vec<FileError>) {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    let mut names: Vec<_> = match dir.names() {
        Ok(names) => names
            .into_iter()
            .filter(|name| {
                let name = Path::new(name);
                name.extension().is_some_and(|e| e == "toml")
                    && name.to_str().is_some_and(|n| !n.starts_with('.'))
            })
            .collect(),
        Err(err) => {
            errors.push(err);
            return (jobs, errors);
        }
    };
    names.sort();
    if names.len() > FILES_MAX {
        errors.push(FileError::whole(
            dir.path(),
            format!(
                "{} job files; at most {FILES_MAX} are read (the rest are ignored)",
                names.len()
            ),
        ));
        names.truncate(FILES_MAX);
    }
    for name in names {
        let path = dir.path().join(&name);
        let text = match dir.read(&name, Kind::Job) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        match parse(&path, &text, ctx) {
            Ok(job) => jobs.push(job),
            Err(err) => errors.push(err),
        }
    }
    (jobs, errors)
}

/// Reads and checks one job file (`None`: it vanished), through checked directories.
pub fn read_file(path: &Path, ctx: &LoadContext) -> Result<Option<Declared>, FileError> {
    let Some(text) = trust::read_file(path, ctx.daemon_uid, Kind::Job)? else {
        return Ok(None);
    };
    parse(path, &text, ctx).map(Some)
}

/// Checks the text of a job file at `path`: the file's own syntax here, then every rule of a
/// job spec in [`crate::spec`] (the same checks `chimectl add` meets), each refusal placed at the
/// line of the key it is about.
pub fn parse(path: &Path, text: &str, ctx: &LoadContext) -> Result<Declared, FileError> {
    let t = Text { path, text };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    crate::spec::check_name(&name).map_err(|e| {
        FileError::whole(
            path,
            format!(
                "the file name gives the job's name: {}; rename the file",
                e.message
            ),
        )
    })?;
    let raw: Raw = toml::from_str(text).map_err(|e| t.toml_error(&e))?;
    let (owner, owner_name) = raw.owner(&t, ctx)?;
    let (job, exec) = raw.read(&t, ctx, Some(name.clone()), owner, None)?;
    let placed = |e: crate::spec::SpecError| t.spec_error(raw.span(e.field), e);
    let stale = crate::spec::resolve(&job, exec.clone(), crate::job::now_ms(), &ctx.local_tz)
        .err()
        .map(placed);
    // The directory and the program, with the job's PATH. (As the reader of the file: its
    // author is chimed's user or root, who may see them anyway.)
    let (program, search) = crate::spec::paths_to_check(&job);
    crate::as_user::check::paths(&job.cwd, program, search).map_err(placed)?;
    let digest =
        postcard::to_stdvec(&(owner, &owner_name, &job, &exec)).expect("declarations encode");
    Ok(Declared {
        path: path.display().to_string(),
        name,
        owner,
        owner_name,
        job,
        exec,
        digest,
        stale,
    })
}

/// What an edit of a job's file (`chimectl edit`) keeps, and who edits it.
#[derive(Debug, Clone, Copy)]
pub struct Editing<'a> {
    /// Who edits (their uid, from `SO_PEERCRED`): root, or the job's owner.
    pub uid: u32,
    /// The job's name, which the edit keeps (the file's name is only shown).
    pub name: Option<&'a str>,
    /// The job's owner, whom it runs as: an edit keeps it.
    pub owner: u32,
    pub owner_name: &'a str,
    /// The administrator's limits, when the one who edits is held to them (not root or
    /// chimed's own user): what `chimectl add` meets.
    pub bounds: Option<&'a Limits>,
}

/// An edited job file, checked as far as it can be without the filesystem.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The spec, with the job's name, to replace the job's with.
    pub job: JobSpec,
    pub exec: Exec,
    /// The file name refusals give, and the line of each key given.
    path: std::path::PathBuf,
    lines: Vec<(SpecField, usize)>,
}

impl Edited {
    /// A refusal about the spec (from the checks made afterwards: its paths, as its owner),
    /// placed at the line of the key it is about, as [`parse_edit`]'s own.
    pub fn place(&self, refusal: ErrorReply) -> FileError {
        let line = refusal.field.and_then(|field| {
            self.lines
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, line)| *line)
        });
        FileError {
            path: self.path.clone(),
            line: line.unwrap_or(0),
            field: refusal
                .field
                .map(|f| f.key().to_owned())
                .unwrap_or_default(),
            message: refusal.message,
        }
    }
}

/// Checks the text of an edited job file (`chimectl edit`, named `file_name` in refusals) as
/// [`parse`] checks a file in `jobs.d`, with the rules of an edit ([`Editing`]); and, as
/// `chimectl add` is, refused when nothing would run as of `now`. Its paths are not looked at
/// here: they are checked as the job's owner, whose eyes only the caller has
/// ([`Edited::place`] places what that finds).
pub fn parse_edit(
    file_name: &str,
    text: &str,
    ctx: &LoadContext,
    editing: &Editing<'_>,
    now: crate::job::Ms,
) -> Result<Edited, FileError> {
    let path = Path::new(file_name);
    let t = Text { path, text };
    let raw: Raw = toml::from_str(text).map_err(|e| t.toml_error(&e))?;
    if let Some(user) = &raw.user {
        let message = if editing.uid != 0 {
            format!(
                "only root says whom a job runs as; leave user out (the job runs as its owner, {})",
                editing.owner_name
            )
        } else if *user.get_ref() != editing.owner_name {
            format!(
                "an edit keeps the job's owner ({}); give user = {:?} or leave user out (to run it as {:?}, add it as that user's job)",
                editing.owner_name,
                editing.owner_name,
                user.get_ref()
            )
        } else {
            String::new()
        };
        if !message.is_empty() {
            return Err(t.error(user.span(), "user", message));
        }
    }
    let (job, exec) = raw.read(
        &t,
        ctx,
        editing.name.map(str::to_owned),
        editing.owner,
        Some(editing),
    )?;
    let placed = |e: crate::spec::SpecError| t.spec_error(raw.span(e.field), e);
    crate::spec::resolve(&job, exec.clone(), now, &ctx.local_tz).map_err(placed)?;
    let lines = SpecField::ALL
        .into_iter()
        .filter_map(|field| Some((field, t.line_of(raw.span(field)?.start))))
        .collect();
    Ok(Edited {
        job,
        exec,
        path: path.to_owned(),
        lines,
    })
}

/// An instant in a job file, in the file's zone.
fn instant(
    t: &Text<'_>,
    v: &Spanned<String>,
    field: &str,
    zone: &jiff::tz::TimeZone,
) -> Result<i64, FileError> {
    chime_proto::human::parse_instant(v.get_ref(), zone)
        .map(|ts| ts.as_millisecond())
        .map_err(|e| t.error(v.span(), field, e))
}

/// A user's home directory, if it is one; else `/`.
fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir)
        .filter(|d| d.is_dir())
        .and_then(|d| d.to_str().map(str::to_owned))
        .unwrap_or_else(|| "/".into())
}

fn word(v: &Option<Spanned<String>>) -> Option<(&str, std::ops::Range<usize>)> {
    v.as_ref().map(|s| (s.get_ref().as_str(), s.span()))
}

impl Raw {
    /// The job the file declares, named `name`, owned by `owner`, with chimed's defaults for
    /// what it leaves out; checked against every rule of a job spec but those that depend on
    /// the time and the filesystem. `editing`: an edit's rules rather than `jobs.d`'s.
    fn read(
        &self,
        t: &Text<'_>,
        ctx: &LoadContext,
        name: Option<String>,
        owner: u32,
        editing: Option<&Editing<'_>>,
    ) -> Result<(JobSpec, Exec), FileError> {
        let command = self.command(t)?;
        let cwd = match &self.cwd {
            Some(cwd) => cwd.get_ref().clone(),
            None => home_of(owner),
        };
        let zone = match &self.tz {
            Some(tz) => jiff::tz::TimeZone::get(tz.get_ref()).map_err(|_| {
                t.error(
                    tz.span(),
                    "tz",
                    format!(
                        "{:?} is not a known time zone; use an IANA name such as Europe/Paris",
                        tz.get_ref()
                    ),
                )
            })?,
            None => ctx.local_tz.clone(),
        };
        let job = JobSpec {
            name,
            command,
            cwd,
            env: self
                .env
                .as_ref()
                .map(|e| e.get_ref().clone().into_iter().collect())
                .unwrap_or_default(),
            schedule: self.schedule(t, &zone)?,
            count: self
                .count
                .as_ref()
                .map(|c| unsigned(t, c, "count"))
                .transpose()?,
            until_ms: self
                .until
                .as_ref()
                .map(|u| instant(t, u, "until", &zone))
                .transpose()?,
            catch_up: self.catch_up(t)?,
            deadline_ms: self
                .deadline
                .as_ref()
                .map(|d| {
                    chime_proto::human::parse_duration(d.get_ref())
                        .map(|d| d.as_millis() as u64)
                        .map_err(|e| t.error(d.span(), "deadline", e))
                })
                .transpose()?,
            overlap: self.overlap(t)?,
            queue: self.queue.as_ref().map(|q| q.get_ref().clone()),
            replace: false,
        };
        let bounds = editing.and_then(|e| e.bounds);
        let exec = self.exec(t, ctx, editing.is_some(), bounds)?;
        // Every rule chimectl add meets: the administrator's file is held to no user's limits,
        // but its schedule to `min_interval` as everyone's is.
        crate::spec::check(&job, &ctx.local_tz, bounds.unwrap_or(&ctx.limits))
            .map_err(|e| t.spec_error(self.span(e.field), e))?;
        Ok((job, exec))
    }

    /// Where the value of `field` is in the file, if it is there.
    fn span(&self, field: SpecField) -> Option<std::ops::Range<usize>> {
        let of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        match field {
            SpecField::Name => None,
            SpecField::Command => self
                .command
                .as_ref()
                .map(Spanned::span)
                .or_else(|| of(&self.shell)),
            SpecField::Cwd => of(&self.cwd),
            SpecField::Env => self.env.as_ref().map(Spanned::span),
            SpecField::At | SpecField::In => of(&self.at),
            SpecField::Every => of(&self.every),
            SpecField::From => of(&self.from).or_else(|| of(&self.every)),
            SpecField::Cron => of(&self.cron),
            SpecField::Tz => of(&self.tz).or_else(|| of(&self.cron)),
            SpecField::Count => self.count.as_ref().map(Spanned::span),
            SpecField::Until => of(&self.until),
            SpecField::CatchUp => of(&self.catch_up),
            SpecField::CatchUpLimit => self
                .catch_up_limit
                .as_ref()
                .map(Spanned::span)
                .or_else(|| of(&self.catch_up)),
            SpecField::Deadline => of(&self.deadline),
            SpecField::Overlap => of(&self.overlap),
            SpecField::Queue => of(&self.queue),
            SpecField::Replace => None,
            SpecField::Retries => self.retries.as_ref().map(Spanned::span),
            SpecField::Backoff => of(&self.backoff),
            SpecField::RetryOn => self.retry_on.as_ref().map(Spanned::span),
            SpecField::Timeout => of(&self.timeout),
            SpecField::KillGrace => of(&self.kill_grace),
            SpecField::MaxOutput => of(&self.max_output),
            SpecField::KeepRuns => self.keep_runs.as_ref().map(Spanned::span),
            SpecField::Retention => of(&self.retention),
            SpecField::MemoryMax => of(&self.memory_max),
            SpecField::CpuQuota => of(&self.cpu_quota),
            SpecField::TasksMax => self.tasks_max.as_ref().map(Spanned::span),
            SpecField::IoWeight => self.io_weight.as_ref().map(Spanned::span),
            SpecField::KeepChildren => None,
        }
    }

    /// `command`, `shell` or `timer`: exactly one.
    fn command(&self, t: &Text<'_>) -> Result<Command, FileError> {
        Ok(match (&self.command, &self.shell, &self.timer) {
            (Some(argv), None, None) => Command::Argv(argv.get_ref().clone()),
            (None, Some(script), None) => Command::Shell(script.get_ref().clone()),
            (None, None, Some(timer)) if *timer.get_ref() => Command::Timer,
            (None, None, Some(timer)) => {
                return Err(t.error(
                    timer.span(),
                    "timer",
                    "`timer = false` declares nothing; give command or shell instead",
                ));
            }
            (None, None, None) => {
                return Err(FileError::whole(
                    t.path,
                    "no command: give command = [\"/path/to/program\", \"arg\"], shell = \"...\" or timer = true",
                ));
            }
            _ => {
                let span = [
                    &self.shell.as_ref().map(Spanned::span),
                    &self.timer.as_ref().map(Spanned::span),
                ]
                .into_iter()
                .flatten()
                .next()
                .cloned()
                .unwrap_or(0..0);
                return Err(t.error(span, "command", "give only one of command, shell and timer"));
            }
        })
    }

    /// Whom the job runs as: `user` (root's files only), else chimed's own user.
    fn owner(&self, t: &Text<'_>, ctx: &LoadContext) -> Result<(u32, String), FileError> {
        let Some(user) = &self.user else {
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(ctx.daemon_uid))
                .ok()
                .flatten()
                .map_or_else(|| ctx.daemon_uid.to_string(), |u| u.name);
            return Ok((ctx.daemon_uid, name));
        };
        let found = nix::unistd::User::from_name(user.get_ref())
            .ok()
            .flatten()
            .ok_or_else(|| {
                t.error(
                    user.span(),
                    "user",
                    format!("no user {:?} on this system", user.get_ref()),
                )
            })?;
        let uid = found.uid.as_raw();
        if ctx.daemon_uid != 0 && uid != ctx.daemon_uid {
            return Err(t.error(
                user.span(),
                "user",
                "only the system chimed (root) runs jobs as other users; leave user out",
            ));
        }
        Ok((uid, found.name))
    }

    /// `cron`, `every` (with `from`) or `at`: exactly one; `tz` with what has times.
    fn schedule(&self, t: &Text<'_>, zone: &jiff::tz::TimeZone) -> Result<ScheduleSpec, FileError> {
        let given: Vec<&str> = [
            ("cron", self.cron.is_some()),
            ("every", self.every.is_some()),
            ("at", self.at.is_some()),
        ]
        .into_iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| k)
        .collect();
        if given.len() > 1 {
            return Err(FileError::whole(
                t.path,
                format!("give one schedule, not {}", given.join(" and ")),
            ));
        }
        if let Some(from) = &self.from
            && self.every.is_none()
        {
            return Err(t.error(from.span(), "from", "applies to every"));
        }
        if let Some(tz) = &self.tz
            && self.cron.is_none()
            && self.at.is_none()
            && self.until.is_none()
        {
            return Err(t.error(tz.span(), "tz", "applies to cron, at and until"));
        }
        Ok(if let Some(cron) = &self.cron {
            ScheduleSpec::Cron {
                expr: cron.get_ref().clone(),
                tz: self.tz.as_ref().map(|tz| tz.get_ref().clone()),
            }
        } else if let Some(every) = &self.every {
            let interval = chime_proto::human::parse_duration(every.get_ref())
                .map_err(|e| t.error(every.span(), "every", e))?;
            ScheduleSpec::Every {
                interval_ms: interval.as_millis() as u64,
                from_ms: self
                    .from
                    .as_ref()
                    .map(|f| instant(t, f, "from", zone))
                    .transpose()?,
            }
        } else if let Some(at) = &self.at {
            ScheduleSpec::At(instant(t, at, "at", zone)?)
        } else {
            return Err(FileError::whole(
                t.path,
                "no schedule: give cron = \"...\", every = \"...\" or at = \"...\" (a job file declares a job that comes due by itself; use chimectl add for one that runs now)",
            ));
        })
    }

    fn catch_up(&self, t: &Text<'_>) -> Result<Option<CatchUpPolicy>, FileError> {
        let catch_up = match word(&self.catch_up) {
            None => None,
            Some(("skip", _)) => Some(CatchUpPolicy::Skip),
            Some(("latest", _)) => Some(CatchUpPolicy::Latest),
            Some(("all", _)) => Some(CatchUpPolicy::All {
                limit: self
                    .catch_up_limit
                    .as_ref()
                    .map(|l| unsigned(t, l, "catch_up_limit"))
                    .transpose()?
                    .unwrap_or(100),
            }),
            Some((other, span)) => {
                return Err(t.error(
                    span,
                    "catch_up",
                    format!("{other:?}: use skip, latest or all"),
                ));
            }
        };
        if let Some(limit) = &self.catch_up_limit
            && !matches!(catch_up, Some(CatchUpPolicy::All { .. }))
        {
            return Err(t.error(limit.span(), "catch_up_limit", "needs catch_up = \"all\""));
        }
        Ok(catch_up)
    }

    fn overlap(&self, t: &Text<'_>) -> Result<Option<OverlapPolicy>, FileError> {
        Ok(match word(&self.overlap) {
            None => None,
            Some(("skip", _)) => Some(OverlapPolicy::Skip),
            Some(("queue", _)) => Some(OverlapPolicy::Queue),
            Some(("allow", _)) => Some(OverlapPolicy::Allow),
            Some(("replace", _)) => Some(OverlapPolicy::Replace),
            Some((other, span)) => {
                return Err(t.error(
                    span,
                    "overlap",
                    format!("{other:?}: use skip, queue, allow or replace"),
                ));
            }
        })
    }

    /// Execution: the file's settings over the defaults (in `jobs.d`, no `retention`: a declared
    /// job is kept while its file exists). With `bounds`, held to a user's limits as
    /// [`crate::spec::resolve_exec`] holds `chimectl add`: more than they allow is refused, a
    /// default above them lowered to them.
    fn exec(
        &self,
        t: &Text<'_>,
        ctx: &LoadContext,
        edit: bool,
        bounds: Option<&Limits>,
    ) -> Result<Exec, FileError> {
        if let Some(retention) = &self.retention
            && !edit
        {
            return Err(t.error(
                retention.span(),
                "retention",
                "a declared job is kept as long as its file exists; remove this key (remove the file to remove the job)",
            ));
        }
        let settings = job_settings(
            t,
            &RawDefaults {
                retries: self.retries.clone(),
                backoff: self.backoff.clone(),
                retry_on: self.retry_on.clone(),
                timeout: self.timeout.clone(),
                kill_grace: self.kill_grace.clone(),
                max_output: self.max_output.clone(),
                keep_runs: self.keep_runs.clone(),
                retention: self.retention.clone(),
                journal: self.journal,
                memory_max: self.memory_max.clone(),
                cpu_quota: self.cpu_quota.clone(),
                tasks_max: self.tasks_max.clone(),
                io_weight: self.io_weight.clone(),
                keep_children: self.keep_children,
            },
            Some(&ctx.controllers),
            bounds,
        )?;
        let mut exec = ctx.exec_defaults.clone();
        settings.apply_as_job(&mut exec);
        if let Some(bounds) = bounds {
            crate::spec::lower_to(&mut exec, bounds);
        }
        Ok(exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LoadContext {
        LoadContext {
            daemon_uid: 0,
            local_tz: jiff::tz::TimeZone::UTC,
            exec_defaults: Exec::default(),
            controllers: crate::cgroup::Controllers::default(),
            limits: crate::limits::Limits::defaults(0),
        }
    }

    fn parse_at(name: &str, text: &str) -> Result<Declared, String> {
        parse(
            Path::new(&format!("/etc/chime/jobs.d/{name}.toml")),
            text,
            &ctx(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_job_file_declares_a_named_job() {
        let job = parse_at(
            "backup",
            r#"
command = ["/bin/true", "--full"]
cron = "30 2 * * *"
tz = "Europe/Paris"
cwd = "/"
env = { LANG = "C.UTF-8" }
queue = "backups"
catch_up = "all"
catch_up_limit = 3
overlap = "queue"
retries = 2
timeout = "2h"
journal = true
"#,
        )
        .unwrap();
        assert_eq!(job.name, "backup");
        assert_eq!(job.job.name.as_deref(), Some("backup"));
        assert_eq!(job.owner, 0);
        assert_eq!(job.job.catch_up, Some(CatchUpPolicy::All { limit: 3 }));
        assert_eq!(job.exec.retries, 2);
        assert_eq!(job.exec.timeout_ms, Some(7_200_000));
        assert!(job.exec.journal);
        assert_eq!(job.job.env, vec![("LANG".into(), "C.UTF-8".into())]);
    }

    #[test]
    fn a_job_file_sets_resource_limits_the_host_can_enforce() {
        let text = "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\nmemory_max = \"64M\"\ncpu_quota = \"50%\"\ntasks_max = 64\nio_weight = 200\nkeep_children = true\n";
        let every = crate::cgroup::Controllers {
            cpu: true,
            memory: true,
            pids: true,
            io: true,
        };
        let ctx = LoadContext {
            controllers: every,
            ..ctx()
        };
        let job = parse(Path::new("/etc/chime/jobs.d/d.toml"), text, &ctx).unwrap();
        assert_eq!(
            job.exec.limits,
            chime_proto::ResourceLimits {
                memory_max: Some(64 << 20),
                cpu_quota_pct: Some(50),
                tasks_max: Some(64),
                io_weight: Some(200),
            }
        );
        assert!(job.exec.keep_children);
        // chimed without the controllers refuses the file, at the first limit's line.
        let e = parse_at("d", text).unwrap_err();
        assert!(
            e.starts_with(
                "/etc/chime/jobs.d/d.toml:4: memory_max: needs the cgroup v2 \"memory\" controller"
            ),
            "{e}"
        );
        // keep_children needs no controller.
        let kept = parse_at(
            "k",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\nkeep_children = true\n",
        )
        .unwrap();
        assert!(kept.exec.keep_children);
        let e = parse(
            Path::new("/etc/chime/jobs.d/d.toml"),
            "timer = true\nevery = \"1h\"\n\ntasks_max = 0\n",
            &ctx,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/etc/chime/jobs.d/d.toml:4: tasks_max: 0 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn the_digest_changes_with_the_declaration() {
        let a = parse_at("t", "timer = true\nevery = \"1m\"\n").unwrap();
        let b = parse_at("t", "# a comment\ntimer = true\nevery = \"1m\"\n").unwrap();
        let c = parse_at("t", "timer = true\nevery = \"2m\"\n").unwrap();
        assert_eq!(a.digest, b.digest, "comments and layout do not matter");
        assert_ne!(a.digest, c.digest);
        assert_eq!(a.job.command, Command::Timer);
    }

    #[test]
    fn bad_files_name_the_line_and_field() {
        let e = parse_at("x", "command = [\"/bin/true\"]\n\ncron = \"61 * * * *\"\n").unwrap_err();
        assert!(e.starts_with("/etc/chime/jobs.d/x.toml:3: cron: "), "{e}");
        let e = parse_at(
            "x",
            "command = [\"/bin/true\"]\nevery = \"1m\"\nretries = -1\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "/etc/chime/jobs.d/x.toml:3: retries: -1 is negative; give 0 or more"
        );
        let e = parse_at("x", "comand = [\"/bin/true\"]\nevery = \"1m\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/chime/jobs.d/x.toml:1: comand: unknown field"),
            "{e}"
        );
        let e = parse_at("x", "command = [\"/no/such/program\"]\nevery = \"1m\"\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/chime/jobs.d/x.toml:1: command: /no/such/program does not exist"
        );
        let e = parse_at(
            "x",
            "command = [\"/bin/true\"]\nevery = \"1m\"\nuser = \"no-such-user-xyz\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "/etc/chime/jobs.d/x.toml:3: user: no user \"no-such-user-xyz\" on this system"
        );
        let e = parse_at("x", "command = [\"/bin/true\"]\n").unwrap_err();
        assert!(e.contains("no schedule"), "{e}");
        let e = parse_at(
            "x",
            "shell = \"true\"\ncommand = [\"/bin/true\"]\nevery = \"1m\"\n",
        )
        .unwrap_err();
        assert!(e.contains("only one of command, shell and timer"), "{e}");
        let e = parse_at(
            "x",
            "timer = true\nevery = \"1m\"\ncwd = \"/no/such/dir\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("/etc/chime/jobs.d/x.toml:3: cwd: "), "{e}");
        let e = parse_at("123", "timer = true\nevery = \"1m\"\n").unwrap_err();
        assert!(e.contains("rename the file"), "{e}");
        let e = parse_at(
            "x",
            "timer = true\nat = \"2030-01-01 00:00\"\nretention = \"1d\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("/etc/chime/jobs.d/x.toml:3: retention: a declared job is kept"),
            "{e}"
        );
        let e = parse_at("x", "timer = true\nevery = \"1m\"\ntz = \"Mars/Olympus\"\n").unwrap_err();
        assert!(e.starts_with("/etc/chime/jobs.d/x.toml:3: tz: "), "{e}");
    }

    /// Issue 11's first two defects, at the parser: a rule of the spec is placed at the line of
    /// the key it is about, never guessed from its message.
    #[test]
    fn spec_refusals_name_their_key_and_line() {
        let big = "x".repeat(chime_proto::request::limits::SPEC_BYTES_MAX);
        let e = parse_at(
            "x",
            &format!("timer = true\nevery = \"1m\"\ncwd = \"/\"\nenv = {{ BIG = \"{big}\" }}\n"),
        )
        .unwrap_err();
        assert!(e.starts_with("/etc/chime/jobs.d/x.toml:4: env: "), "{e}");
        // Nothing would run: the file is fine as a file, its declaration has run out. Where
        // and why is kept for whoever applies it.
        let stale = parse_at(
            "x",
            "timer = true\nevery = \"1h\"\nfrom = \"2100-01-01 00:00\"\nuntil = \"2099-01-01 00:00\"\n",
        )
        .unwrap()
        .stale
        .expect("until before the first occurrence")
        .to_string();
        assert!(
            stale.starts_with("/etc/chime/jobs.d/x.toml:4: until: is before the first occurrence"),
            "{stale}"
        );
        let e = parse_at("x", "timer = true\nevery = \"0s\"\n").unwrap_err();
        assert!(e.starts_with("/etc/chime/jobs.d/x.toml:2: every: "), "{e}");
        let e = parse_at(
            "x",
            "timer = true\nat = \"2100-01-01 00:00\"\n\noverlap = \"queue\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("/etc/chime/jobs.d/x.toml:4: overlap: applies to recurring"),
            "{e}"
        );
    }

    fn editing(uid: u32, bounds: Option<&Limits>) -> Editing<'_> {
        Editing {
            uid,
            name: Some("mine"),
            owner: 1000,
            owner_name: "alice",
            bounds,
        }
    }

    fn edit(text: &str, editing: &Editing<'_>) -> Result<Edited, String> {
        parse_edit("mine.toml", text, &ctx(), editing, crate::job::now_ms())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_edit_keeps_the_name_and_owner() {
        let text = "timer = true\nevery = \"1h\"\ncwd = \"/\"\nretention = \"2d\"\n";
        let edited = edit(text, &editing(1000, None)).unwrap();
        assert_eq!(edited.job.name.as_deref(), Some("mine"));
        // Not a declared job: it has a retention.
        assert_eq!(edited.exec.retention_ms, 2 * 86_400_000);
        let e = edit(&format!("{text}user = \"alice\"\n"), &editing(1000, None)).unwrap_err();
        assert!(
            e.starts_with("mine.toml:5: user: only root says whom a job runs as"),
            "{e}"
        );
        assert!(edit(&format!("{text}user = \"alice\"\n"), &editing(0, None)).is_ok());
        let e = edit(&format!("{text}user = \"root\"\n"), &editing(0, None)).unwrap_err();
        assert!(
            e.starts_with("mine.toml:5: user: an edit keeps the job's owner (alice)"),
            "{e}"
        );
    }

    #[test]
    fn a_users_edit_meets_their_limits_at_the_keys_line() {
        let bounds = Limits::defaults(0);
        let e = edit(
            "timer = true\ncwd = \"/\"\n\nevery = \"500ms\"\n",
            &editing(1000, Some(&bounds)),
        )
        .unwrap_err();
        assert!(
            e.starts_with("mine.toml:4: every: the interval must be at least"),
            "{e}"
        );
        let e = edit(
            "timer = true\ncwd = \"/\"\nevery = \"1h\"\nmax_output = \"1T\"\n",
            &editing(1000, Some(&bounds)),
        )
        .unwrap_err();
        assert!(
            e.starts_with("mine.toml:4: max_output: a user's job may keep at most"),
            "{e}"
        );
        // Root is held to none of them.
        assert!(
            edit(
                "timer = true\ncwd = \"/\"\nevery = \"1s\"\n",
                &editing(0, None)
            )
            .is_ok()
        );
        // Nothing would run: refused, as chimectl add refuses it.
        let e = edit(
            "timer = true\ncwd = \"/\"\nevery = \"1h\"\nuntil = \"2001-01-01 00:00\"\n",
            &editing(0, None),
        )
        .unwrap_err();
        assert!(e.starts_with("mine.toml:4: until: is in the past"), "{e}");
    }

    #[test]
    fn later_refusals_are_placed_at_their_key() {
        let edited = edit(
            "timer = true\nevery = \"1h\"\n\ncwd = \"/srv\"\n",
            &editing(0, None),
        )
        .unwrap();
        let e = edited.place(ErrorReply::about(SpecField::Cwd, "/srv does not exist"));
        assert_eq!(e.to_string(), "mine.toml:4: cwd: /srv does not exist");
        let e = edited.place(ErrorReply::about(SpecField::Queue, "full"));
        assert_eq!(e.to_string(), "mine.toml:0: queue: full");
    }
}
