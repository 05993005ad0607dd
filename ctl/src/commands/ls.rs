//! `chimectl ls`

use crate::cli::LsArgs;
use crate::client::Client;
use crate::output::{local_tz, print_json, short, summary_json, table, user_name, when};
use anyhow::{anyhow, bail};
use chime_proto::{JobId, JobState, ListQuery, Request, Response};
use serde_json::json;

pub async fn run(client: &mut Client, args: LsArgs, json: bool) -> anyhow::Result<()> {
    let state = args
        .state
        .as_deref()
        .map(|word| {
            JobState::from_word(word).ok_or_else(|| {
                anyhow!("--state {word:?}: use scheduled, queued, paused, running, succeeded, failed or cancelled")
            })
        })
        .transpose()?;
    let mut after = args.after.map(JobId);
    let mut jobs = Vec::new();
    let next = loop {
        let request = Request::List(ListQuery {
            state,
            queue: args.queue.clone(),
            name_prefix: args.name.clone(),
            after,
            limit: if args.all {
                10_000
            } else {
                args.limit.saturating_sub(jobs.len() as u32).max(1)
            },
        });
        let Response::Jobs(page) = client.call(request).await? else {
            bail!("chimed answered ls with something else");
        };
        jobs.extend(page.jobs);
        // chimed may cut a page of large jobs short: go on until the page asked for is full.
        let wanted = if args.limit == 0 {
            1000
        } else {
            args.limit as usize
        };
        match page.next {
            Some(next) if args.all || jobs.len() < wanted => after = Some(next),
            next => break next,
        }
    };
    if json {
        print_json(&json!({
            "jobs": jobs.iter().map(summary_json).collect::<Vec<_>>(),
            "next": next.map(|id| id.0),
        }));
        return Ok(());
    }
    if jobs.is_empty() {
        outln!("no jobs");
    } else {
        let tz = local_tz();
        let mut t = table(&[
            "ID",
            "NAME",
            "STATE",
            "OWNER",
            "QUEUE",
            "SCHEDULE",
            "NEXT / SINCE",
            "LAST",
            "COMMAND",
        ]);
        for job in &jobs {
            let mut state = job.state.to_string();
            if job.owed > 1 {
                state.push_str(&format!(" (+{})", job.owed));
            }
            t.add_row(vec![
                job.id.to_string(),
                job.name.clone().unwrap_or_else(|| "-".into()),
                state,
                user_name(job.owner_uid),
                job.queue.clone(),
                short(&job.schedule, 32),
                when(
                    if job.state == JobState::Running {
                        job.since_ms
                    } else {
                        job.next_due_ms.or(job.since_ms)
                    },
                    &tz,
                ),
                job.last_outcome
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                short(&job.command.to_string(), 50),
            ]);
        }
        outln!("{t}");
    }
    if let Some(next) = next {
        outln!("(more: chimectl ls --after {next}, or --all)");
    }
    Ok(())
}
