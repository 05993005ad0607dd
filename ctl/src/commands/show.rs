//! `chimectl show`

use crate::client::Client;
use crate::output::{detail_json, duration_between, local_tz, print_json, table, user_name, when};
use anyhow::bail;
use chime_proto::{JobRef, Request, Response};

pub async fn run(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Job(detail) = client.call(Request::Show(JobRef::parse(job))).await? else {
        bail!("chimed answered show with something else");
    };
    if json {
        print_json(&detail_json(&detail));
        return Ok(());
    }
    let tz = local_tz();
    let s = &detail.summary;
    match &s.name {
        Some(name) => println!("job {} ({name})", s.id),
        None => println!("job {}", s.id),
    }
    let mut state = s.state.to_string();
    if detail.cancel_requested {
        state.push_str(" (cancel requested)");
    }
    let rows: Vec<(&str, String)> = vec![
        ("state", state),
        (
            "owner",
            format!("{} (uid {})", user_name(s.owner_uid), s.owner_uid),
        ),
        ("command", s.command.to_string()),
        ("cwd", detail.cwd.clone()),
        (
            "env",
            if detail.env.is_empty() {
                "-".into()
            } else {
                detail
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        ("created", when(Some(s.created_at_ms), &tz)),
        ("due", when(s.due_at_ms, &tz)),
        ("since", when(s.since_ms, &tz)),
    ];
    for (key, value) in rows {
        println!("  {key:<9}{value}");
    }
    if detail.runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!();
    let mut t = table(&[
        "RUN", "ATTEMPT", "STARTED", "DURATION", "PID", "OUTCOME", "OUTPUT",
    ]);
    for run in &detail.runs {
        t.add_row(vec![
            run.run.to_string(),
            run.attempt.to_string(),
            when(Some(run.started_at_ms), &tz),
            duration_between(run.started_at_ms, run.finished_at_ms),
            run.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            run.outcome
                .as_ref()
                .map_or_else(|| "running".into(), ToString::to_string),
            format!("{} B", run.output_bytes),
        ]);
    }
    println!("{t}");
    Ok(())
}
