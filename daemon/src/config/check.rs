//! `chimed --check-config [PATH]`: the files read and checked exactly as chimed reads them at
//! start and reload ([`super::load`], [`super::jobs`]), nothing applied, no daemon needed.
//! `chimectl config check` runs this, so there is one reader of the files and one check of the
//! jobs they declare ([`crate::spec`]), not a copy in the client.

use super::{FileError, LoadContext, jobs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Checks `path` (a configuration file, a job file or a `jobs.d` directory; default: this
/// user's configuration file) and prints the report, as text or JSON.
pub fn run(path: Option<PathBuf>, json: bool) -> ExitCode {
    match check(path) {
        Ok(found) => {
            report(&found, json);
            if found.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("chimed: {message}");
            ExitCode::from(2)
        }
    }
}

/// What a check found: the files that passed, their warnings, and the problems.
struct Found {
    checked: Vec<String>,
    /// Declarations with nothing left to run as of now ([`jobs::Declared::stale`]).
    stale: Vec<FileError>,
    errors: Vec<FileError>,
}

impl Found {
    fn of(jobs: Vec<jobs::Declared>, errors: Vec<FileError>) -> Self {
        let (checked, stale) = jobs
            .into_iter()
            .map(|j| (j.path, j.stale))
            .unzip::<_, _, Vec<_>, Vec<_>>();
        Self {
            checked,
            stale: stale.into_iter().flatten().collect(),
            errors,
        }
    }
}

/// The files that passed, and the problems found.
fn check(path: Option<PathBuf>) -> Result<Found, String> {
    let given = path.is_some();
    let path = match path {
        Some(path) => path,
        None => super::defaults().config.map_err(|why| {
            format!(
                "no file given and no default configuration file: {why}; give the path of \
                 chimed.toml, a job file or a jobs.d directory"
            )
        })?,
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    let ctx = LoadContext {
        daemon_uid: nix::unistd::getuid().as_raw(),
        local_tz: jiff::tz::TimeZone::system(),
        exec_defaults: crate::job::Exec::default(),
        // The controllers chimed would find for its runs' cgroups, looked at without making
        // anything: a limit the host cannot apply is refused as a start would refuse it.
        controllers: crate::cgroup::tree::probe_controllers(),
        limits: crate::limits::Limits::defaults(nix::unistd::getuid().as_raw()),
    };
    // Whatever the entry is (a link, a FIFO): chimed would read it as a job file, and refuse it.
    let is_job_file = path.symlink_metadata().is_ok_and(|m| !m.is_dir())
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "jobs.d");
    // Job files on their own are held to the configuration beside their directory.
    let beside = |jobs_dir: &Path| ctx.for_jobs_in(jobs_dir);
    Ok(if path.is_dir() {
        match beside(&path) {
            Ok(ctx) => {
                let (found, errors) = jobs::read_dir(&path, &ctx);
                Found::of(found, errors)
            }
            Err(err) => Found::of(Vec::new(), vec![err]),
        }
    } else if is_job_file {
        match beside(path.parent().unwrap_or_else(|| Path::new("/")))
            .and_then(|ctx| jobs::read_file(&path, &ctx))
        {
            Ok(found) => Found::of(found.into_iter().collect(), Vec::new()),
            Err(err) => Found::of(Vec::new(), vec![err]),
        }
    } else {
        // A missing configuration file is what a fresh install has, and chimed accepts it; a
        // path given that names nothing is a typo.
        let exists = path.exists();
        if !exists && given {
            return Err(format!(
                "{} does not exist; give the path of chimed.toml, a job file or a jobs.d directory (or none, for the default configuration file)",
                path.display()
            ));
        }
        if !exists {
            eprintln!(
                "note: {} does not exist: chimed runs on its defaults",
                path.display()
            );
        }
        match super::load(&path, None, &ctx) {
            Ok(loaded) => {
                let mut found = Found::of(loaded.jobs, loaded.errors);
                if exists {
                    found.checked.insert(0, path.display().to_string());
                }
                found
            }
            Err(err) => Found::of(Vec::new(), vec![err]),
        }
    })
}

/// Prints the report; a closed stdout (`| head`) is not an error.
fn report(found: &Found, json: bool) {
    use std::io::Write;
    let Found {
        checked,
        stale,
        errors,
    } = found;
    let mut out = std::io::stdout().lock();
    let strings = |list: &[FileError]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    if json {
        let value = serde_json::json!({
            "ok": errors.is_empty(),
            "checked": checked,
            "errors": strings(errors),
            "warnings": strings(stale),
        });
        let _ = writeln!(out, "{value:#}");
        return;
    }
    for error in errors {
        eprintln!("{error}");
    }
    for warning in stale {
        eprintln!(
            "warning: {warning} (a job this file declared before is kept as it is; a new or changed file is refused for it)"
        );
    }
    if errors.is_empty() {
        let warned = match stale.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        };
        let _ = writeln!(out, "ok: {} file(s) checked{warned}", checked.len());
    } else {
        eprintln!(
            "{} problem(s); {} file(s) fine",
            errors.len(),
            checked.len()
        );
    }
}
