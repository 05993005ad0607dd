//! `chimectl queue set` and `queue ls`

use crate::cli::QueueCmd;
use crate::client::Client;
use crate::commands::add::resource_limits;
use crate::output::{describe_pause, limits_json, local_tz, pause_json, print_json, table};
use anyhow::bail;
use chime_proto::{QueueInfo, QueueSettings, Request, Response};
use serde_json::json;

fn print(queues: &[QueueInfo], json: bool) {
    if json {
        print_json(&json!({
            "queues": queues.iter().map(|q| json!({
                "name": q.name,
                "parallel": q.parallel,
                "running": q.running,
                "waiting": q.waiting,
                "pause": pause_json(q.pause.as_ref()),
                "limits": limits_json(&q.limits),
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    let tz = local_tz();
    let mut t = table(&[
        "QUEUE", "PARALLEL", "RUNNING", "WAITING", "PAUSE", "EACH RUN",
    ]);
    for q in queues {
        t.add_row(vec![
            q.name.clone(),
            q.parallel.map_or_else(|| "-".into(), |p| p.to_string()),
            q.running.to_string(),
            q.waiting.to_string(),
            q.pause
                .as_ref()
                .map_or_else(|| "-".into(), |p| describe_pause(p, &tz)),
            if q.limits.is_empty() {
                "-".into()
            } else {
                q.limits.describe()
            },
        ]);
    }
    crate::output::print_table(&t);
}

pub async fn run(client: &mut Client, cmd: QueueCmd, json: bool) -> anyhow::Result<()> {
    // `queue set` prints the queues as they now are: a confirmation, which --quiet silences.
    let confirmation = matches!(cmd, QueueCmd::Set { .. });
    let request = match cmd {
        QueueCmd::Set {
            name,
            parallel,
            unlimited,
            no_limits,
            resources,
        } => {
            if parallel == Some(0) {
                bail!("--parallel must be at least 1; to stop a queue, pause it");
            }
            Request::SetQueue(QueueSettings {
                name,
                parallel: if unlimited {
                    Some(None)
                } else {
                    parallel.map(Some)
                },
                clear_limits: no_limits,
                limits: resource_limits(&resources)?,
            })
        }
        QueueCmd::Ls => Request::Queues,
    };
    let Response::Queues(queues) = client.call(request).await? else {
        bail!("chimed answered with something else");
    };
    if !(confirmation && crate::output::quiet()) {
        print(&queues, json);
    }
    Ok(())
}
