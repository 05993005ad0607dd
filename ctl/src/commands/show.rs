//! `chimectl show`

use crate::client::Client;
use crate::output::{
    Tone, cell, describe_pause, describe_usage, detail_json, duration_between, local_tz,
    print_json, table, user_name, when,
};
use anyhow::bail;
use chime_proto::human::format_duration;
use chime_proto::{JobRef, Request, Response, RunInfo};
use std::time::Duration;

pub async fn run(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Job(detail) = client.call(Request::Show(JobRef::parse(job))).await? else {
        bail!("chimed answered show with something else");
    };
    if json {
        print_json(&detail_json(&detail));
        return Ok(());
    }
    let exec = &detail.exec;
    let tz = local_tz();
    let s = &detail.summary;
    match &s.name {
        Some(name) => outln!("job {} ({name})", s.id),
        None => outln!("job {}", s.id),
    }
    let mut state = s.state.to_string();
    if detail.cancelling {
        state.push_str(" (cancelling)");
    }
    if let Some(pause) = &s.pause {
        state.push_str(&format!(", {}", describe_pause(pause, &tz)));
    }
    let mut limits = Vec::new();
    if let Some(count) = detail.count {
        limits.push(format!("{} of {count} runs", s.runs_started));
    }
    if let Some(until) = detail.until_ms {
        limits.push(format!("until {}", when(Some(until), &tz)));
    }
    let mut policies = format!(
        "catch-up {}, overlap {}",
        detail.catch_up.as_str(),
        detail.overlap.as_str()
    );
    if let Some(deadline) = detail.deadline_ms {
        policies.push_str(&format!(
            ", deadline {}",
            format_duration(Duration::from_millis(deadline))
        ));
    }
    let ms = |ms: u64| format_duration(Duration::from_millis(ms));
    let mut execution = if exec.retries > 0 {
        format!(
            "retries {} (backoff {}:{}, on {})",
            exec.retries,
            ms(exec.backoff_base_ms),
            ms(exec.backoff_max_ms),
            exec.retry_on
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    } else {
        "no retries".to_string()
    };
    if let Some(timeout) = exec.timeout_ms {
        execution.push_str(&format!(", timeout {}", ms(timeout)));
    }
    execution.push_str(&format!(
        ", kill grace {}, output cap {}, keeps {} runs for {}",
        ms(exec.kill_grace_ms),
        chime_proto::human::format_size(exec.max_output),
        exec.keep_runs,
        ms(exec.retention_ms)
    ));
    if let Some(retry) = detail.next_retry_ms {
        execution.push_str(&format!("; next retry {}", when(Some(retry), &tz)));
    }
    let state = match &s.waiting_for {
        Some(why) => format!("{state} ({why})"),
        None => state,
    };
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
        ("schedule", s.schedule.clone()),
        (
            "limits",
            if limits.is_empty() {
                "-".into()
            } else {
                limits.join(", ")
            },
        ),
        ("policies", policies),
        ("execution", execution),
        ("queue", s.queue.clone()),
        (
            "resources",
            format!(
                "{}{}",
                exec.limits.describe(),
                if exec.keep_children {
                    "; what a run leaves running is kept"
                } else {
                    ""
                }
            ),
        ),
        (
            "output",
            if detail.journal {
                "kept per run, and each line to the journal".into()
            } else {
                "kept per run".into()
            },
        ),
        (
            "source",
            detail
                .source
                .clone()
                .unwrap_or_else(|| "added with chimectl".into()),
        ),
        ("created", when(Some(s.created_at_ms), &tz)),
        ("next", when(s.next_due_ms, &tz)),
        (
            "owed",
            if detail.owed.is_empty() {
                "-".into()
            } else {
                detail
                    .owed
                    .iter()
                    .map(|t| when(Some(*t), &tz))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ];
    for (key, value) in rows {
        let line = format!("  {key:<10}{value}");
        if key == "state" {
            // The state word in colour on a terminal.
            let word = 12..12 + s.state.as_str().len();
            crate::output::write_wrapped_toned(&line, word, Tone::of_state(s.state));
        } else {
            crate::output::write_wrapped(&line);
        }
    }
    // On a terminal, the tables' times are short (`11-30 18:15:10`, in the zone above): the
    // full ones are in --json.
    let at = |ms: i64| match crate::output::terminal_width() {
        Some(_) => crate::output::when_short(Some(ms), &tz),
        None => when(Some(ms), &tz),
    };
    if detail.missed_total > 0 {
        outln!();
        outln!(
            "{} occurrences did not run; the latest:",
            detail.missed_total
        );
        let mut t = table(&["DUE", "DECIDED", "WHY"]);
        for m in &detail.missed {
            t.add_row(vec![at(m.due_at_ms), at(m.decided_at_ms), m.reason.clone()]);
        }
        crate::output::print_table(&t);
    }
    outln!();
    if detail.runs.is_empty() {
        outln!("no runs yet");
        return Ok(());
    }
    let mut t = table(&[
        "RUN", "ATTEMPT", "DUE", "STARTED", "DURATION", "PID", "OUTCOME", "OUTPUT",
    ]);
    for run in &detail.runs {
        t.add_row(
            vec![
                run.run.to_string(),
                run.attempt.to_string(),
                at(run.due_at_ms),
                at(run.started_at_ms),
                duration_between(run.started_at_ms, run.finished_at_ms),
                run.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                run.outcome
                    .as_ref()
                    .map_or_else(|| "running".into(), ToString::to_string),
                format!("{} B", run.output_bytes),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                // OUTCOME in colour on a terminal.
                let tone =
                    (i == 6).then(|| run.outcome.as_ref().map_or(Tone::Active, Tone::of_outcome));
                cell(text, tone)
            })
            .collect::<Vec<_>>(),
        );
    }
    crate::output::print_table(&t);
    let notes: Vec<String> = detail.runs.iter().flat_map(run_notes).collect();
    if !notes.is_empty() {
        outln!();
        for note in notes {
            wline!("{note}");
        }
    }
    Ok(())
}

/// What a run's row has no room for, a line each: what it cost, and what was left of it when
/// chimed started after losing it.
fn run_notes(run: &RunInfo) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(usage) = &run.usage {
        notes.push(format!("run {}: {}", run.run, describe_usage(usage)));
    }
    match run.ended_at_start {
        Some(1) => notes.push(format!(
            "run {}: 1 process of it was still running when chimed started; it was ended before any retry",
            run.run
        )),
        Some(n) => notes.push(format!(
            "run {}: {n} processes of it were still running when chimed started; they were ended before any retry",
            run.run
        )),
        None => {}
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use chime_proto::{Outcome, RunId, RunUsage};

    fn run(id: u64) -> RunInfo {
        RunInfo {
            run: RunId(id),
            attempt: 1,
            due_at_ms: 0,
            started_at_ms: 0,
            finished_at_ms: Some(10),
            pid: Some(42),
            outcome: Some(Outcome::Exited(0)),
            output_bytes: 0,
            usage: None,
            ended_at_start: None,
        }
    }

    #[test]
    fn a_run_without_usage_or_leftovers_has_no_notes() {
        assert!(run_notes(&run(1)).is_empty());
    }

    #[test]
    fn a_runs_usage_is_one_line_naming_the_run() {
        let usage = RunUsage {
            cpu_user_us: 1_200_000,
            cpu_system_us: 30_000,
            memory_peak_bytes: Some(45 << 20),
            io_read_bytes: None,
            io_write_bytes: None,
        };
        let notes = run_notes(&RunInfo {
            usage: Some(usage),
            ..run(7)
        });
        assert_eq!(
            notes,
            ["run 7: cpu 1.20 s user + 0.03 s system, peak memory 45.0 MiB"]
        );
    }

    #[test]
    fn a_lost_run_says_what_was_ended_at_start() {
        let lost = |n| RunInfo {
            outcome: Some(Outcome::Lost),
            ended_at_start: Some(n),
            ..run(3)
        };
        assert_eq!(
            run_notes(&lost(2)),
            [
                "run 3: 2 processes of it were still running when chimed started; they were ended before any retry"
            ]
        );
        assert_eq!(
            run_notes(&lost(1)),
            [
                "run 3: 1 process of it was still running when chimed started; it was ended before any retry"
            ]
        );
    }
}
