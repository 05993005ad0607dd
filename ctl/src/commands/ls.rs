//! `chimectl ls`

use crate::cli::LsArgs;
use crate::client::Client;
use crate::output::{
    Tone, cell, local_tz, print_json, print_table, relative, short, summary_json, table,
    terminal_width, user_name, when,
};
use anyhow::{anyhow, bail};
use chime_proto::{JobId, JobState, ListQuery, Request, Response};
use serde_json::json;

pub async fn run(client: &mut Client, args: LsArgs, json: bool) -> anyhow::Result<()> {
    let Some(every) = args.watch else {
        return once(client, &args, json).await;
    };
    // On a terminal each frame replaces the last (the screen is cleared); elsewhere frames follow
    // one another, a blank line between.
    let tty = crate::output::terminal_width().is_some();
    loop {
        if tty {
            out!("\x1b[H\x1b[2J");
        }
        outln!(
            "every {every}s: chimectl ls    {}",
            crate::output::when(Some(jiff::Timestamp::now().as_millisecond()), &local_tz())
        );
        outln!();
        once(client, &args, json).await?;
        if !tty {
            outln!();
        }
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}

/// One listing.
async fn once(client: &mut Client, args: &LsArgs, json: bool) -> anyhow::Result<()> {
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
        print_rows(&jobs, args.wide);
    }
    if let Some(next) = next {
        outln!("(more: chimectl ls --after {next}, or --all)");
    }
    Ok(())
}

/// The jobs as a table that fits the terminal: times relative to now ("in 5m", "2h ago"; `show`
/// and `--json` have them in full), and the schedule and command cut to the width left.
/// `wide`, or output that is not a terminal: every column in full, times absolute.
fn print_rows(jobs: &[chime_proto::JobSummary], wide: bool) {
    let tz = local_tz();
    let now = jiff::Timestamp::now().as_millisecond();
    let width = if wide { None } else { terminal_width() };
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|job| {
            let mut state = job.state.to_string();
            if job.owed > 1 {
                state.push_str(&format!(" (+{})", job.owed));
            }
            if let Some(why) = &job.waiting_for {
                state.push_str(&format!(" ({why})"));
            }
            let at = if job.state == JobState::Running {
                job.since_ms
            } else {
                job.next_due_ms.or(job.since_ms)
            };
            [
                job.id.to_string(),
                job.name.clone().unwrap_or_else(|| "-".into()),
                state,
                user_name(job.owner_uid),
                job.queue.clone(),
                job.schedule.clone(),
                match width {
                    Some(_) => relative(at, now),
                    None => when(at, &tz),
                },
                job.last_outcome
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                job.command.to_string(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "STATE",
        "OWNER",
        "QUEUE",
        "SCHEDULE",
        "NEXT / SINCE",
        "LAST",
        "COMMAND",
    ];
    // Each column as wide as its widest cell, two spaces between (none after the last); where
    // that is too wide, the widest of the columns that may shrink gives a character, and again,
    // down to their least widths.
    let mut widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // NAME, STATE (with why it waits), QUEUE, SCHEDULE, LAST and COMMAND may shrink; the
    // others are short.
    let least = [0, 4, 9, 0, 5, 8, 0, 6, 8];
    if let Some(width) = width {
        let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * (w.len() - 1);
        while total(&widths) > width {
            let Some(i) = (0..widths.len())
                .filter(|i| least[*i] > 0 && widths[*i] > least[*i])
                .max_by_key(|i| widths[*i])
            else {
                break;
            };
            widths[i] -= 1;
        }
    }
    let mut t = table(&header);
    for (job, row) in jobs.iter().zip(rows) {
        // STATE and LAST in colour on a terminal.
        let tones = [
            None,
            None,
            Tone::of_state(job.state),
            None,
            None,
            None,
            None,
            job.last_outcome.as_ref().map(Tone::of_outcome),
            None,
        ];
        t.add_row(
            row.iter()
                .zip(&widths)
                .zip(tones)
                .map(|((text, w), tone)| cell(short(text, *w), tone))
                .collect::<Vec<_>>(),
        );
    }
    print_table(&t);
}
