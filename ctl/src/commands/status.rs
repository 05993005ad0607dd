//! `chimectl status`

use crate::client::Client;
use crate::output::{local_tz, print_json, time_json, when};
use anyhow::bail;
use chime_proto::human::format_duration;
use chime_proto::{Request, Response};
use serde_json::{Map, Value, json};
use std::time::Duration;

pub async fn run(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let Response::Status(s) = client.call(Request::Status).await? else {
        bail!("chimed answered status with something else");
    };
    if json {
        let counts: Map<String, Value> = s
            .counts
            .iter()
            .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
            .collect();
        print_json(&json!({
            "daemon_version": s.daemon_version,
            "protocol_version": s.protocol_version,
            "pid": s.pid,
            "started_at": time_json(Some(s.started_at_ms)),
            "uptime_ms": s.uptime_ms,
            "state_dir": s.state_dir,
            "socket": s.socket,
            "database_path": s.database_path,
            "database_bytes": s.database_bytes,
            "counts": counts,
            "next_due_at": time_json(s.next_due_at_ms),
            "commits": s.commits,
            "changes": s.changes,
            "last_commit_us": s.last_commit_us,
            "connections": s.connections,
            "max_running": s.max_running,
        }));
        return Ok(());
    }
    let tz = local_tz();
    let counts = s
        .counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "chimed {} (pid {}), up {}",
        s.daemon_version,
        s.pid,
        format_duration(Duration::from_millis(s.uptime_ms))
    );
    println!("  jobs       {counts}");
    println!("  next due   {}", when(s.next_due_at_ms, &tz));
    println!(
        "  database   {} ({:.1} MiB)",
        s.database_path,
        s.database_bytes as f64 / 1_048_576.0
    );
    println!("  socket     {}", s.socket);
    println!(
        "  commits    {} for {} changes, last took {} us",
        s.commits, s.changes, s.last_commit_us
    );
    println!(
        "  clients    {} connected; at most {} jobs run at once",
        s.connections, s.max_running
    );
    Ok(())
}
