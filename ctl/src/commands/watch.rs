//! `chimectl watch`: follow the event log.

use crate::cli::WatchArgs;
use crate::client::Client;
use crate::output::{
    describe_usage, limits_json, local_tz, outcome_json, time_json, usage_json, when,
};
use anyhow::bail;
use chime_proto::human::{format_duration, format_instant};
use chime_proto::{EventKind, EventRecord, JobRef, PauseTarget, Request, Response, WatchItem};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

pub async fn run(client: &mut Client, args: WatchArgs, json: bool) -> anyhow::Result<()> {
    let query = chime_proto::WatchQuery {
        since: args.since,
        job: args.job.as_deref().map(JobRef::parse),
    };
    let Response::Watching(start) = client.call(Request::Watch(query)).await? else {
        bail!("chimed answered watch with something else");
    };
    if start.pruned {
        eprintln!(
            "chimectl: events up to {} were already pruned; starting from the oldest retained one ({})",
            start.from.saturating_sub(1),
            start.oldest
        );
    }
    let tz = local_tz();
    let mut stdout = std::io::stdout().lock();
    let mut left = args.count;
    loop {
        let Some(item) = client.next_watch().await? else {
            bail!(
                "chimed closed the connection (it stopped); resume with --since and the last sequence number printed"
            );
        };
        match item {
            WatchItem::Events(events) => {
                for event in events {
                    if left == Some(0) {
                        return Ok(());
                    }
                    let line = if json {
                        event_json(&event).to_string()
                    } else {
                        describe(&event, &tz)
                    };
                    // A closed pipe (`| head`) ends the watch quietly.
                    if writeln!(stdout, "{line}").is_err() {
                        return Ok(());
                    }
                    left = left.map(|n| n - 1);
                }
                if stdout.flush().is_err() {
                    return Ok(());
                }
                if left == Some(0) {
                    return Ok(());
                }
            }
            WatchItem::Lagged { resume_from, lost } => {
                if lost > 0 {
                    eprintln!(
                        "chimectl: fell behind; {lost} events were pruned before they could be read; resuming at {}",
                        resume_from + lost
                    );
                } else {
                    eprintln!("chimectl: fell behind; resuming from the log at {resume_from}");
                }
            }
        }
    }
}

fn target(target: &PauseTarget) -> String {
    match target {
        PauseTarget::All => "everything".into(),
        PauseTarget::Queue(q) => format!("queue {q}"),
        PauseTarget::Job(job) => job.to_string(),
    }
}

/// One line for people.
pub fn describe(event: &EventRecord, tz: &jiff::tz::TimeZone) -> String {
    let subject = match (&event.job, &event.name) {
        (Some(id), Some(name)) => format!("job {id} ({name})"),
        (Some(id), None) => format!("job {id}"),
        _ => String::new(),
    };
    let what = match &event.kind {
        EventKind::Added {
            queue,
            next_due_ms,
            timer,
            source,
        } => format!(
            "added{} in queue {queue} by {source}, next due {}",
            if *timer { " as a timer" } else { "" },
            when(*next_due_ms, tz)
        ),
        EventKind::Updated { next_due_ms } => {
            format!("updated, next due {}", when(*next_due_ms, tz))
        }
        EventKind::State { from, to } => format!("{from} -> {to}"),
        EventKind::Started {
            run,
            attempt,
            due_ms,
            ..
        } => format!(
            "started run {run} (attempt {attempt}, {} late)",
            late(event.at_ms, *due_ms)
        ),
        EventKind::Ended {
            run,
            outcome,
            duration_ms,
            usage,
            ..
        } => {
            let mut out = format!(
                "run {run} ended: {outcome} after {}",
                format_duration(Duration::from_millis(*duration_ms))
            );
            if let Some(usage) = usage {
                out.push_str(&format!("; {}", describe_usage(usage)));
            }
            out
        }
        EventKind::Fired {
            run,
            due_ms,
            manual,
        } => {
            if *manual {
                format!("fired (run {run}, triggered)")
            } else {
                format!("fired (run {run}, {} late)", late(event.at_ms, *due_ms))
            }
        }
        EventKind::Missed { due_ms, reason } => {
            format!(
                "missed the occurrence due {} ({reason})",
                when(Some(*due_ms), tz)
            )
        }
        EventKind::Paused {
            target: t,
            until_ms,
            reason,
        } => {
            let mut out = format!("{} paused", target(t));
            if let Some(until) = until_ms {
                out.push_str(&format!(" until {}", when(Some(*until), tz)));
            }
            if let Some(reason) = reason {
                out.push_str(&format!(" ({reason})"));
            }
            out
        }
        EventKind::Resumed { target: t } => format!("{} resumed", target(t)),
        EventKind::Removed { reason } => format!("removed ({reason})"),
        EventKind::QueueLimit {
            queue,
            parallel,
            limits,
        } => {
            let at_once = match parallel {
                Some(n) => format!("queue {queue} limited to {n} at once"),
                None => format!("queue {queue} has no limit"),
            };
            if limits.is_empty() {
                at_once
            } else {
                format!("{at_once}; each run: {}", limits.describe())
            }
        }
    };
    // Who did it, when it was not the job's owner (root acting on a user's job, a pause of a
    // queue).
    let what = match event.actor {
        Some(actor) if event.owner != Some(actor) => {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(actor))
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {actor}"), |u| u.name);
            format!("{what} (by {user})")
        }
        _ => what,
    };
    let time = format_instant(event.at_ms, tz);
    if subject.is_empty() {
        format!("{:>6} {time} {what}", event.seq)
    } else {
        format!("{:>6} {time} {subject} {what}", event.seq)
    }
}

fn late(at_ms: i64, due_ms: i64) -> String {
    format_duration(Duration::from_millis(
        at_ms.saturating_sub(due_ms).max(0) as u64
    ))
}

/// What a pause or resume applies to, for scripts: `{"all": true}`, `{"queue": NAME}` or
/// `{"job": ID or NAME}` (here and in `pause --json` and `resume --json`).
pub fn target_json(target: &PauseTarget) -> Value {
    match target {
        PauseTarget::All => json!({ "all": true }),
        PauseTarget::Queue(q) => json!({ "queue": q }),
        PauseTarget::Job(JobRef::Id(id)) => json!({ "job": id.0 }),
        PauseTarget::Job(JobRef::Name(name)) => json!({ "job": name }),
    }
}

/// One NDJSON object: the record's fields and the event's own.
pub fn event_json(event: &EventRecord) -> Value {
    let mut value = json!({
        "seq": event.seq,
        "at": time_json(Some(event.at_ms)),
        "at_ms": event.at_ms,
        "job": event.job.map(|j| j.0),
        "name": event.name,
        "owner_uid": event.owner,
        "actor_uid": event.actor,
        "event": event.kind.as_str(),
    });
    let fields = match &event.kind {
        EventKind::Added {
            queue,
            next_due_ms,
            timer,
            source,
        } => json!({
            "queue": queue, "next_due": time_json(*next_due_ms), "timer": timer, "source": source,
        }),
        EventKind::Updated { next_due_ms } => json!({ "next_due": time_json(*next_due_ms) }),
        EventKind::State { from, to } => json!({ "from": from.as_str(), "to": to.as_str() }),
        EventKind::Started {
            run,
            attempt,
            due_ms,
            queue,
        } => json!({
            "run": run.0, "attempt": attempt, "due": time_json(Some(*due_ms)), "due_ms": due_ms,
            "late_ms": event.at_ms - due_ms, "queue": queue,
        }),
        EventKind::Ended {
            run,
            attempt,
            outcome,
            duration_ms,
            usage,
        } => {
            json!({
                "run": run.0, "attempt": attempt, "outcome": outcome_json(Some(outcome)),
                "exit_code": outcome.exit_code(), "signal": outcome.signal(),
                "duration_ms": duration_ms, "usage": usage_json(usage.as_ref()),
            })
        }
        EventKind::Fired {
            run,
            due_ms,
            manual,
        } => json!({
            "run": run.0, "due": time_json(Some(*due_ms)), "due_ms": due_ms,
            "late_ms": event.at_ms - due_ms, "manual": manual,
        }),
        EventKind::Missed { due_ms, reason } => {
            json!({ "due": time_json(Some(*due_ms)), "reason": reason })
        }
        EventKind::Paused {
            target,
            until_ms,
            reason,
        } => {
            json!({ "target": target_json(target), "until": time_json(*until_ms), "reason": reason })
        }
        EventKind::Resumed { target } => json!({ "target": target_json(target) }),
        EventKind::Removed { reason } => json!({ "reason": reason }),
        EventKind::QueueLimit {
            queue,
            parallel,
            limits,
        } => {
            json!({ "queue": queue, "parallel": parallel, "limits": limits_json(limits) })
        }
    };
    if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), fields) {
        object.extend(extra);
    }
    value
}
