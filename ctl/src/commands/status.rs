//! `chimectl status`

use crate::client::Client;
use crate::output::{describe_pause, local_tz, pause_json, print_json, time_json, when};
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
        let queues: Map<String, Value> = s
            .paused_queues
            .iter()
            .map(|(q, p)| (q.clone(), pause_json(Some(p))))
            .collect();
        let fleet = s.fleet.as_ref().map(|f| {
            let hosts: Vec<Value> = f
                .hosts
                .iter()
                .map(|h| {
                    json!({
                        "host": h.host,
                        "epoch": h.epoch,
                        "lease_left_ms": h.lease_left_ms,
                        "running": h.running,
                    })
                })
                .collect();
            json!({ "this_host": f.this_host, "hosts": hosts })
        });
        let mut all = json!({
            "daemon_version": s.daemon_version,
            "protocol_version": s.protocol_version,
            "pid": s.pid,
            "started_at": time_json(Some(s.started_at_ms)),
            "uptime_ms": s.uptime_ms,
            "state_dir": s.state_dir,
            "socket": s.socket,
            "database_path": s.database_path,
            "database_bytes": s.database_bytes,
            "database_disk_bytes": s.database_disk_bytes,
            "counts": counts,
            "next_due_at": time_json(s.next_due_at_ms),
            "commits": s.commits,
            "changes": s.changes,
            "last_commit_us": s.last_commit_us,
            "connections": s.connections,
            "max_running": s.max_running,
            "zone": s.zone,
            "paused_all": pause_json(s.paused_all.as_ref()),
            "paused_queues": queues,
            "running": s.running,
            "events_oldest": s.events_oldest,
            "events_head": s.events_head,
            "watchers": s.watchers,
            "config": s.config,
            "jobs_dir": s.jobs_dir,
            "declared_jobs": s.declared_jobs,
            "last_reload": time_json(s.last_reload_ms),
            "reload_errors": s.reload_errors,
            "last_batch": s.last_batch,
            "socket_activated": s.socket_activated,
            "account_check": s.account_check,
            "containment": {
                "mode": s.containment.mode,
                "cgroup": s.containment.cgroup,
                "controllers": s.containment.controllers,
                "description": s.containment.description,
            },
            "engine_priority": s.engine_priority,
            "limits": s.limits.iter().map(|l| serde_json::json!({
                "setting": l.setting, "value": l.value, "source": l.source,
            })).collect::<Vec<_>>(),
            "open_files": s.open_files,
            "max_connections": s.max_connections,
            "storage_fault": s.storage_fault,
            "disk_free_bytes": s.disk_free_bytes,
            "damaged_records": s.damaged_records,
            "scrubbed": s.scrubbed,
        });
        all["fleet"] = fleet.unwrap_or(Value::Null);
        print_json(&all);
        return Ok(());
    }
    let tz = local_tz();
    let counts = s
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
    wline!(
        "chimed {} (pid {}), up {}",
        s.daemon_version,
        s.pid,
        format_duration(Duration::from_millis(s.uptime_ms))
    );
    if let Some(fault) = &s.storage_fault {
        wline!("  CHANGES CANNOT BE STORED: {fault}");
    }
    if s.damaged_records > 0 {
        wline!(
            "  DAMAGED RECORDS: {} in the database (chimed's log says which, and what to do)",
            s.damaged_records
        );
    }
    if let Some(pause) = &s.paused_all {
        wline!(
            "  EVERYTHING IS {}",
            describe_pause(pause, &tz).to_uppercase()
        );
    }
    for (queue, pause) in &s.paused_queues {
        wline!("  queue {queue} is {}", describe_pause(pause, &tz));
    }
    wline!("  jobs       {counts}; {} running now", s.running);
    wline!("  next due   {}", when(s.next_due_at_ms, &tz));
    wline!("  zone       {} (for cron jobs that name none)", s.zone);
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    // redb may grow the file's length ahead of what it has written: say both when they differ.
    let size = if s.database_disk_bytes + (1 << 20) < s.database_bytes {
        format!(
            "{:.1} MiB on disk, {:.1} MiB long",
            mib(s.database_disk_bytes),
            mib(s.database_bytes)
        )
    } else {
        format!("{:.1} MiB", mib(s.database_bytes))
    };
    wline!(
        "  database   {} ({size}; {:.1} MiB free on its disk)",
        s.database_path,
        mib(s.disk_free_bytes)
    );
    wline!(
        "  socket     {}{}",
        s.socket,
        if s.socket_activated {
            " (from systemd)"
        } else {
            ""
        }
    );
    wline!(
        "  config     {} ({} declared jobs from {}; last applied {}{})",
        s.config,
        s.declared_jobs,
        s.jobs_dir,
        when(s.last_reload_ms, &tz),
        match s.reload_errors {
            0 => String::new(),
            n => format!(", {n} file(s) refused"),
        }
    );
    wline!(
        "  commits    {} for {} changes, last took {} us for {} changes",
        s.commits,
        s.changes,
        s.last_commit_us,
        s.last_batch
    );
    wline!(
        "  events     {} to {} retained; {} watching",
        s.events_oldest,
        s.events_head,
        s.watchers
    );
    wline!(
        "  clients    {} connected (at most {}, {} open files); at most {} jobs run at once",
        s.connections,
        s.max_connections,
        s.open_files,
        s.max_running
    );
    wline!("  accounts   {}", s.account_check);
    wline!("  runs       {}", s.containment.description);
    wline!("  engine     {}", s.engine_priority);
    if let Some(fleet) = &s.fleet {
        let hosts: Vec<String> = fleet
            .hosts
            .iter()
            .map(|h| {
                let lease = if h.lease_left_ms >= 0 {
                    format!("lease {:.1} s left", h.lease_left_ms as f64 / 1000.0)
                } else {
                    format!(
                        "GONE: lease ended {:.1} s ago",
                        h.lease_left_ms.unsigned_abs() as f64 / 1000.0
                    )
                };
                let this = if h.host == fleet.this_host {
                    " (this one)"
                } else {
                    ""
                };
                format!(
                    "{}{this}: {} running, epoch {}, {lease}",
                    h.host, h.running, h.epoch
                )
            })
            .collect();
        wline!("  fleet      {}", hosts.join("; "));
    }
    if !s.limits.is_empty() {
        let each: Vec<String> = s
            .limits
            .iter()
            .map(|l| format!("{} {}", l.setting, l.value))
            .collect();
        wline!("  per user   {}", each.join(", "));
    }
    Ok(())
}
