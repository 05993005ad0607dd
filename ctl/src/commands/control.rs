//! `chimectl kill`, `retry` and `rm`

use crate::client::Client;
use crate::output::print_json;
use anyhow::{anyhow, bail};
use chime_proto::{JobRef, KillRequest, Request, Response};
use serde_json::json;

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number.
pub fn parse_signal(text: &str) -> anyhow::Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let known = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| anyhow!("--signal {text:?}: not a signal; use a name such as TERM, KILL, HUP, INT or USR1, or a number"))
}

pub async fn kill(client: &mut Client, job: &str, signal: &str, json: bool) -> anyhow::Result<()> {
    let signal = parse_signal(signal)?;
    let request = Request::Kill(KillRequest {
        job: JobRef::parse(job),
        signal,
    });
    let Response::Killed(killed) = client.call(request).await? else {
        bail!("chimed answered kill with something else");
    };
    if json {
        print_json(&json!({ "id": killed.id.0, "signalled": killed.signalled }));
    } else {
        confirm!(
            "job {}: signal {signal} sent to {} run(s)",
            killed.id,
            killed.signalled
        );
    }
    Ok(())
}

pub async fn retry(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Triggered(t) = client.call(Request::Retry(JobRef::parse(job))).await? else {
        bail!("chimed answered retry with something else");
    };
    if json {
        print_json(&json!({ "id": t.id.0, "state": t.state.as_str() }));
    } else {
        confirm!("job {}: {}", t.id, t.state);
    }
    Ok(())
}

pub async fn remove(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Removed(removed) = client.call(Request::Remove(JobRef::parse(job))).await? else {
        bail!("chimed answered rm with something else");
    };
    if json {
        print_json(&json!({ "id": removed.id.0, "runs": removed.runs }));
    } else {
        confirm!("job {}: removed with {} run(s)", removed.id, removed.runs);
    }
    Ok(())
}
