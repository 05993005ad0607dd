//! `status`: version, uptime, counts, pauses, storage and engine figures.

use super::query;
use crate::context::Context;
use chime_proto::{DaemonStatus, ErrorReply, JobState, PROTOCOL_VERSION, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Jobs per state, as users are shown them: a running job whose runs all wait in the runner for
/// a slot counts as queued (see [`crate::job::Job::shown`]).
fn counts(
    context: &Context,
    reader: &crate::store::Reader,
) -> Result<Vec<(JobState, u64)>, ErrorReply> {
    let mut counts = reader.counts()?;
    let moved = super::held_back(context, reader)?.len() as u64;
    for (state, n) in &mut counts {
        match state {
            // Found by reading records; their stored state still counts them where they were.
            JobState::Damaged => *n = context.damage.jobs(),
            JobState::Running => *n = n.saturating_sub(moved),
            JobState::Queued => *n += moved,
            _ => {}
        }
    }
    Ok(counts)
}

/// The fleet's hosts, with their runs in progress (`None` on redb).
fn fleet(
    context: &Context,
    reader: &crate::store::Reader,
) -> Result<Option<chime_proto::FleetStatus>, ErrorReply> {
    let Some((this_host, hosts)) = context.store.fleet()? else {
        return Ok(None);
    };
    let running = reader.running_by_host()?;
    Ok(Some(chime_proto::FleetStatus {
        this_host,
        hosts: hosts
            .into_iter()
            .map(|(host, epoch, lease_left_ms)| chime_proto::FleetHost {
                running: running.get(&Some(host.clone())).copied().unwrap_or(0),
                host,
                epoch,
                lease_left_ms,
            })
            .collect(),
    }))
}

pub async fn handle(context: &Arc<Context>) -> Result<Response, ErrorReply> {
    query(context, |context| {
        let reader = context.store.read()?;
        let info = &context.info;
        let db = context.store.path();
        let (events_oldest, events_head) = reader.event_bounds()?;
        let running = context
            .stats
            .running
            .lock()
            .map_or(0, |r| r.values().sum::<usize>()) as u32;
        let reload = context.reload_state();
        let paused_queues = reader
            .queues()?
            .into_iter()
            .filter_map(|(name, record)| record.pause.clone().map(|p| (name, p)))
            .collect();
        let file = std::fs::metadata(db).ok();
        Ok(Response::Status(Box::new(DaemonStatus {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            pid: info.pid,
            started_at_ms: info.started_at_ms,
            uptime_ms: info.started.elapsed().as_millis() as u64,
            state_dir: info.state_dir.display().to_string(),
            socket: info.socket.display().to_string(),
            database_path: db.display().to_string(),
            database_bytes: file.as_ref().map_or(0, |m| m.len()),
            database_disk_bytes: file.as_ref().map_or(0, |m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }),
            counts: counts(context, &reader)?,
            next_due_at_ms: reader.first_due()?,
            commits: context.stats.commits.load(Ordering::Relaxed),
            changes: context.stats.changes.load(Ordering::Relaxed),
            last_commit_us: context.stats.last_commit_us.load(Ordering::Relaxed),
            connections: context.connections.load(Ordering::Relaxed),
            max_running: info.max_running as u32,
            paused_all: reader.pause_all()?,
            paused_queues,
            zone: info.zone_name.clone(),
            running,
            events_oldest,
            events_head,
            watchers: context.events.receiver_count() as u32,
            config: info.config_path.display().to_string(),
            jobs_dir: info.jobs_dir().display().to_string(),
            declared_jobs: reader.declared_count()?,
            last_reload_ms: reload.last_ms,
            reload_errors: reload.errors,
            last_batch: context.stats.last_batch.load(Ordering::Relaxed) as u32,
            socket_activated: info.socket_activated,
            account_check: info.account_check.clone(),
            containment: info.containment.clone(),
            engine_priority: context.stats.priority.get().cloned().unwrap_or_default(),
            limits: context.limits.get().infos(),
            open_files: info.open_files,
            max_connections: info.max_connections as u32,
            storage_fault: context.store.fault().map(|f| f.message),
            disk_free_bytes: crate::store::free_bytes(&info.state_dir).unwrap_or(0),
            damaged_records: context.damage.records(),
            scrubbed: context.damage.scrubbed(),
            fleet: fleet(context, &reader)?,
        })))
    })
    .await
}
