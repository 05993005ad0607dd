//! `chimectl config check`, `chimectl reload` and `chimectl metrics`.

use crate::client::Client;
use crate::output::print_json;
use anyhow::{Context, bail};
use chime_proto::{ReloadReport, Request, Response};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Checks files exactly as chimed reads them, without a daemon and without applying anything:
/// by running `chimed --check-config` (chimed beside chimectl, else the one in `PATH`), so that
/// there is one reader of the files and one check of their jobs.
pub fn check(path: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let chimed = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("chimed")))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from("chimed"));
    let mut command = std::process::Command::new(&chimed);
    command.arg("--check-config");
    command.args(path);
    if json {
        command.arg("--json");
    }
    let status = command.status().with_context(|| {
        format!(
            "cannot run {} --check-config, which checks the files: install chimed beside chimectl or in PATH",
            chimed.display()
        )
    })?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
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
        "warnings": r.warnings,
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
    confirm!("reloaded {} and {}", r.config, r.jobs_dir);
    confirm!("  added      {}", list(&r.added));
    confirm!("  updated    {}", list(&r.updated));
    confirm!("  removed    {}", list(&r.removed));
    confirm!("  unchanged  {}", r.unchanged);
    if !r.restart_needed.is_empty() {
        outln!(
            "  changed settings that take effect at the next restart: {}",
            r.restart_needed.join(", ")
        );
    }
    for warning in &r.warnings {
        eprintln!("chimectl: warning: {warning}");
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
