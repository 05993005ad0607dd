//! `chimectl status`

use crate::client::Client;
use crate::output::{describe_pause, local_tz, pause_json, print_json, time_json, when};
use anyhow::bail;
use chime_proto::human::format_duration;
use chime_proto::{Request, Response};
use serde_json::{Map, Value, json};
use std::time::Duration;

pub async fn run(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let Response::Status2(st) = client.call(Request::Status2).await? else {
        bail!("chimed answered status with something else");
    };
    let s = &st.v1;
    if json {
        let counts: Map<String, Value> = st
            .counts
            .iter()
            .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
            .collect();
        let queues: Map<String, Value> = st
            .paused_queues
            .iter()
            .map(|(q, p)| (q.clone(), pause_json(Some(p))))
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
            "zone": st.zone,
            "paused_all": pause_json(st.paused_all.as_ref()),
            "paused_queues": queues,
        }));
        return Ok(());
    }
    let tz = local_tz();
    let counts = st
        .counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>();
    let counts = if counts.is_empty() {
        "none".to_string()
    } else {
        counts.join(", ")
    };
    println!(
        "chimed {} (pid {}), up {}",
        s.daemon_version,
        s.pid,
        format_duration(Duration::from_millis(s.uptime_ms))
    );
    if let Some(pause) = &st.paused_all {
        println!(
            "  EVERYTHING IS {}",
            describe_pause(pause, &tz).to_uppercase()
        );
    }
    for (queue, pause) in &st.paused_queues {
        println!("  queue {queue} is {}", describe_pause(pause, &tz));
    }
    println!("  jobs       {counts}");
    println!("  next due   {}", when(s.next_due_at_ms, &tz));
    println!("  zone       {} (for cron jobs that name none)", st.zone);
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
