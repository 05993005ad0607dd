//! `status`: version, uptime, counts, storage and engine figures.

use super::query;
use crate::server::Shared;
use chime_proto::{DaemonStatus, ErrorReply, PROTOCOL_VERSION, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub async fn handle(shared: &Arc<Shared>) -> Result<Response, ErrorReply> {
    query(shared, |shared| {
        let reader = shared.store.read()?;
        let info = &shared.info;
        let db = shared.store.path();
        Ok(Response::Status(Box::new(DaemonStatus {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            pid: info.pid,
            started_at_ms: info.started_at_ms,
            uptime_ms: info.started.elapsed().as_millis() as u64,
            state_dir: info.state_dir.display().to_string(),
            socket: info.socket.display().to_string(),
            database_path: db.display().to_string(),
            database_bytes: std::fs::metadata(db).map_or(0, |m| m.len()),
            counts: reader.counts()?,
            next_due_at_ms: reader.first_due()?,
            commits: shared.stats.commits.load(Ordering::Relaxed),
            changes: shared.stats.changes.load(Ordering::Relaxed),
            last_commit_us: shared.stats.last_commit_us.load(Ordering::Relaxed),
            connections: shared.connections.load(Ordering::Relaxed),
            max_running: info.max_running as u32,
        })))
    })
    .await
}
