//! `chimectl status`

use crate::client::Client;
use crate::output::{describe_pause, local_tz, pause_json, print_json, time_json, when};
use anyhow::bail;
use chime_proto::human::format_duration;
use chime_proto::{Request, Response};
use serde_json::{Map, Value, json};
use std::time::Duration;

pub async fn run(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let Response::Status3(st3) = client.call(Request::Status3).await? else {
        bail!("chimed answered status with something else");
    };
    let st = &st3.v2;
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
            "running": st3.running,
            "events_oldest": st3.events_oldest,
            "events_head": st3.events_head,
            "watchers": st3.watchers,
            "config": st3.config,
            "jobs_dir": st3.jobs_dir,
            "declared_jobs": st3.declared_jobs,
            "last_reload": time_json(st3.last_reload_ms),
            "reload_errors": st3.reload_errors,
            "last_batch": st3.last_batch,
            "socket_activated": st3.socket_activated,
            "account_check": st3.account_check,
            "limits": st3.limits.iter().map(|l| serde_json::json!({
                "setting": l.setting, "value": l.value, "source": l.source,
            })).collect::<Vec<_>>(),
            "open_files": st3.open_files,
            "max_connections": st3.max_connections,
            "storage_fault": st3.storage_fault,
            "disk_free_bytes": st3.disk_free_bytes,
            "damaged_records": st3.damaged_records,
            "scrubbed": st3.scrubbed,
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
    outln!(
        "chimed {} (pid {}), up {}",
        s.daemon_version,
        s.pid,
        format_duration(Duration::from_millis(s.uptime_ms))
    );
    if let Some(fault) = &st3.storage_fault {
        outln!("  CHANGES CANNOT BE STORED: {fault}");
    }
    if st3.damaged_records > 0 {
        outln!(
            "  DAMAGED RECORDS: {} in the database (chimed's log says which, and what to do)",
            st3.damaged_records
        );
    }
    if let Some(pause) = &st.paused_all {
        outln!(
            "  EVERYTHING IS {}",
            describe_pause(pause, &tz).to_uppercase()
        );
    }
    for (queue, pause) in &st.paused_queues {
        outln!("  queue {queue} is {}", describe_pause(pause, &tz));
    }
    outln!("  jobs       {counts}; {} running now", st3.running);
    outln!("  next due   {}", when(s.next_due_at_ms, &tz));
    outln!("  zone       {} (for cron jobs that name none)", st.zone);
    outln!(
        "  database   {} ({:.1} MiB; {:.1} MiB free on its disk)",
        s.database_path,
        s.database_bytes as f64 / 1_048_576.0,
        st3.disk_free_bytes as f64 / 1_048_576.0
    );
    outln!(
        "  socket     {}{}",
        s.socket,
        if st3.socket_activated {
            " (from systemd)"
        } else {
            ""
        }
    );
    outln!(
        "  config     {} ({} declared jobs from {}; last applied {}{})",
        st3.config,
        st3.declared_jobs,
        st3.jobs_dir,
        when(st3.last_reload_ms, &tz),
        match st3.reload_errors {
            0 => String::new(),
            n => format!(", {n} file(s) refused"),
        }
    );
    outln!(
        "  commits    {} for {} changes, last took {} us for {} changes",
        s.commits,
        s.changes,
        s.last_commit_us,
        st3.last_batch
    );
    outln!(
        "  events     {} to {} retained; {} watching",
        st3.events_oldest,
        st3.events_head,
        st3.watchers
    );
    outln!(
        "  clients    {} connected (at most {}, {} open files); at most {} jobs run at once",
        s.connections,
        st3.max_connections,
        st3.open_files,
        s.max_running
    );
    outln!("  accounts   {}", st3.account_check);
    if !st3.limits.is_empty() {
        let each: Vec<String> = st3
            .limits
            .iter()
            .map(|l| format!("{} {}", l.setting, l.value))
            .collect();
        outln!("  per user   {}", each.join(", "));
    }
    Ok(())
}
