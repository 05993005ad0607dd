//! Applying the configuration: at start, and on SIGHUP, `systemctl reload chimed` and
//! `chimectl reload`.
//!
//! 1. Read and check `chimed.toml` and every job file, on a blocking thread
//!    ([`crate::config::load`]).
//! 2. At start, any problem stops chimed with its message. On a reload, a configuration file
//!    that does not parse changes nothing; a job file that does not parse keeps its previous job.
//! 3. Hand the engine the declared jobs and queue limits ([`Reconcile`]): it applies them in
//!    one transaction, so a reload is all or nothing for the files that passed.
//! 4. New job defaults from `[defaults]` apply to jobs submitted afterwards.
//!
//! Around a reload chimed tells systemd `RELOADING=1` and then `READY=1`. A reload never stops
//! the daemon: every failure becomes a line of the report.

use crate::config::{self, LoadContext, Loaded};
use crate::context::Context;
use crate::engine::batch::{Reconcile, Work};
use chime_proto::{ReloadReport, Response};
use std::sync::Arc;

/// Reads everything; blocks.
pub fn read(context: &Context) -> Result<Loaded, config::FileError> {
    let ctx = LoadContext {
        daemon_uid: context.info.uid,
        local_tz: context.info.local_tz.clone(),
        exec_defaults: crate::job::Exec::default(),
        controllers: context.controllers,
        limits: crate::limits::Limits::defaults(context.info.uid),
    };
    config::load(&context.info.config_path, Some(&context.args), &ctx)
}

/// Applies what was read: defaults for new jobs, then declared jobs and queue limits through
/// the engine, as asked by `actor` (`None`: chimed itself, at start or on SIGHUP). Returns the
/// engine's report with the files' errors added.
pub async fn apply(
    context: &Arc<Context>,
    loaded: Loaded,
    at_start: bool,
    actor: Option<u32>,
) -> ReloadReport {
    if let Ok(mut current) = context.exec_defaults.write() {
        *current = loaded.job_defaults.clone();
    }
    // Defaults derived from settings a reload does not change (max_running, event_retention)
    // follow the values in force.
    context.limits.set(crate::limits::Limits::resolve(
        &loaded.settings.limits,
        context.info.config_path.clone(),
        context.info.max_running,
        context.info.event_retention,
        context.info.uid,
    ));
    let plan = Reconcile {
        declared: loaded.jobs,
        refused: loaded.refused,
        queues: Some(loaded.settings.queues.clone()),
        actor,
    };
    let mut report = match context
        .engine
        .request(Work::Reconcile(Box::new(plan)))
        .await
    {
        Ok(Response::Reloaded(report)) => report,
        Ok(other) => ReloadReport {
            errors: vec![format!("unexpected answer from the engine: {other:?}")],
            ..ReloadReport::default()
        },
        Err(err) => ReloadReport {
            errors: vec![format!("the changes were not applied: {}", err.message)],
            ..ReloadReport::default()
        },
    };
    let mut errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    errors.append(&mut report.errors);
    report.errors = errors;
    report.restart_needed = if at_start {
        Vec::new()
    } else {
        loaded
            .settings
            .restart_only_changes(&context.reload_state().settings)
    };
    report.config = context.info.config_path.display().to_string();
    report.jobs_dir = context.info.jobs_dir().display().to_string();
    for warning in &report.warnings {
        tracing::warn!("job file: {warning}");
    }
    if let Ok(mut state) = context.reload.lock() {
        state.last_ms = Some(crate::job::now_ms());
        state.errors = report.errors.len() as u32;
        // Settings that need a restart keep the values chimed started with.
        if at_start {
            state.settings = loaded.settings;
        }
    }
    report
}

/// A reload, from a signal (`actor` `None`) or a request: read, apply, report, tell systemd.
pub async fn reload(context: &Arc<Context>, actor: Option<u32>) -> ReloadReport {
    let _one_at_a_time = context.reload_lock.lock().await;
    crate::systemd::reloading();
    let read = {
        let context = Arc::clone(context);
        tokio::task::spawn_blocking(move || read(&context)).await
    };
    let report = match read {
        Ok(Ok(loaded)) => apply(context, loaded, false, actor).await,
        Ok(Err(err)) => {
            if let Ok(mut state) = context.reload.lock() {
                state.last_ms = Some(crate::job::now_ms());
                state.errors = 1;
            }
            ReloadReport {
                config: context.info.config_path.display().to_string(),
                jobs_dir: context.info.jobs_dir().display().to_string(),
                errors: vec![format!("{err} (nothing was changed)")],
                ..ReloadReport::default()
            }
        }
        Err(err) => ReloadReport {
            errors: vec![format!("reading the configuration panicked: {err}")],
            ..ReloadReport::default()
        },
    };
    for error in &report.errors {
        tracing::error!("reload refused {error}");
    }
    tracing::info!(
        added = report.added.len(),
        updated = report.updated.len(),
        removed = report.removed.len(),
        unchanged = report.unchanged,
        errors = report.errors.len(),
        restart_needed = %report.restart_needed.join(", "),
        "configuration reloaded"
    );
    crate::systemd::ready(&context.status_line());
    report
}
