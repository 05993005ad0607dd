//! `chimectl config check`, `chimectl reload` and `chimectl metrics`.

use crate::client::Client;
use crate::output::print_json;
use anyhow::bail;
use chime_daemon::config::{self, FileError, LoadContext, jobs};
use chime_proto::{ReloadReport, Request, Response};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Checks files exactly as chimed reads them, without a daemon and without applying anything.
pub fn check(path: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let uid = nix::unistd::getuid().as_raw();
    let path = match path {
        Some(path) => path,
        None => config::defaults().config.map_err(|why| {
            anyhow::anyhow!(
                "no file given and no default configuration file: {why}; give the path of \
                 chimed.toml, a job file or a jobs.d directory"
            )
        })?,
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    let ctx = LoadContext {
        daemon_uid: uid,
        local_tz: jiff::tz::TimeZone::system(),
        exec_defaults: chime_daemon::job::Exec::default(),
    };
    // Whatever the entry is (a link, a FIFO): chimed would read it as a job file, and refuse it.
    let is_job_file = path.symlink_metadata().is_ok_and(|m| !m.is_dir())
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "jobs.d");
    let (checked, errors): (Vec<String>, Vec<FileError>) = if path.is_dir() {
        let (found, errors) = jobs::read_dir(&path, &ctx);
        (found.into_iter().map(|j| j.path).collect(), errors)
    } else if is_job_file {
        match jobs::read_file(&path, &ctx) {
            Ok(found) => (found.into_iter().map(|j| j.path).collect(), Vec::new()),
            Err(err) => (Vec::new(), vec![err]),
        }
    } else {
        if !path.exists() {
            bail!(
                "{} does not exist (chimed would run on its defaults); give the path of chimed.toml, a job file or a jobs.d directory",
                path.display()
            );
        }
        match config::load(&path, None, &ctx) {
            Ok(loaded) => {
                let mut checked = vec![path.display().to_string()];
                checked.extend(loaded.jobs.into_iter().map(|j| j.path));
                (checked, loaded.errors)
            }
            Err(err) => (Vec::new(), vec![err]),
        }
    };
    if json {
        print_json(&json!({
            "ok": errors.is_empty(),
            "checked": checked,
            "errors": errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    } else {
        for error in &errors {
            eprintln!("{error}");
        }
        if errors.is_empty() {
            outln!("ok: {} file(s) checked", checked.len());
        } else {
            eprintln!(
                "{} problem(s); {} file(s) fine",
                errors.len(),
                checked.len()
            );
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn reload(client: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let Response::Reloaded(report) = client.call(Request::Reload).await? else {
        bail!("chimed answered reload with something else");
    };
    if json {
        print_json(&report_json(&report));
    } else {
        print_report(&report);
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report_json(r: &ReloadReport) -> serde_json::Value {
    json!({
        "config": r.config,
        "jobs_dir": r.jobs_dir,
        "added": r.added,
        "updated": r.updated,
        "removed": r.removed,
        "unchanged": r.unchanged,
        "errors": r.errors,
        "restart_needed": r.restart_needed,
    })
}

fn print_report(r: &ReloadReport) {
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(", ")
        }
    };
    outln!("reloaded {} and {}", r.config, r.jobs_dir);
    outln!("  added      {}", list(&r.added));
    outln!("  updated    {}", list(&r.updated));
    outln!("  removed    {}", list(&r.removed));
    outln!("  unchanged  {}", r.unchanged);
    if !r.restart_needed.is_empty() {
        outln!(
            "  changed settings that take effect at the next restart: {}",
            r.restart_needed.join(", ")
        );
    }
    for error in &r.errors {
        eprintln!("chimectl: refused: {error}");
    }
    if !r.errors.is_empty() {
        eprintln!("chimectl: the refused files' previous versions stay in effect");
    }
}

pub async fn metrics(client: &mut Client) -> anyhow::Result<()> {
    let Response::Metrics(text) = client.call(Request::Metrics).await? else {
        bail!("chimed answered metrics with something else");
    };
    out!("{text}");
    Ok(())
}
