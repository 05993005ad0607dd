//! `chimectl logs`

use crate::cli::LogsArgs;
use crate::client::{Client, Refused};
use crate::output::print_json;
use anyhow::bail;
use chime_proto::request::limits;
use chime_proto::{ErrorCode, JobRef, LogChunk, LogsQuery, Request, Response, RunId, Stream};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// How often `-f` asks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

async fn fetch(
    client: &mut Client,
    job: &JobRef,
    run: Option<RunId>,
    from: Option<u64>,
    max_bytes: u64,
) -> anyhow::Result<Option<LogChunk>> {
    let request = Request::Logs(LogsQuery {
        job: job.clone(),
        run,
        from,
        max_bytes,
    });
    match client.call(request).await {
        Ok(Response::Logs(chunk)) => Ok(Some(chunk)),
        Ok(_) => bail!("chimed answered logs with something else"),
        // With -f, a job that has not run yet is waited for.
        Err(err)
            if err.downcast_ref::<Refused>().is_some_and(|r| {
                r.0.code == ErrorCode::NotFound && r.0.message.contains("has not run yet")
            }) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Keeps the last `n` lines of a chunk's segments.
fn tail_lines(chunk: &mut LogChunk, n: usize) {
    let mut newlines = 0;
    let mut cut: Option<(usize, usize)> = None;
    'outer: for (i, seg) in chunk.segments.iter().enumerate().rev() {
        for (j, byte) in seg.data.iter().enumerate().rev() {
            // A newline that ends the output does not start a line.
            let at_end = i == chunk.segments.len() - 1 && j == seg.data.len() - 1;
            if *byte == b'\n' && !at_end {
                newlines += 1;
                if newlines == n {
                    cut = Some((i, j + 1));
                    break 'outer;
                }
            }
        }
    }
    if let Some((i, j)) = cut {
        chunk.segments.drain(..i);
        chunk.segments[0].data.drain(..j);
    }
    if n == 0 {
        chunk.segments.clear();
    }
}

fn print_text(chunk: &LogChunk) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for seg in &chunk.segments {
        match seg.stream {
            Stream::Stdout => out
                .write_all(&seg.data)
                .unwrap_or_else(|e| crate::output::quit_on(&e)),
            Stream::Stderr => err.write_all(&seg.data)?,
        }
    }
    out.flush().unwrap_or_else(|e| crate::output::quit_on(&e));
    err.flush()?;
    Ok(())
}

pub async fn run(client: &mut Client, args: LogsArgs, json: bool) -> anyhow::Result<()> {
    let job = JobRef::parse(&args.job);
    let run = args.run.map(RunId);
    let max = if args.tail.is_some() {
        limits::LOG_CHUNK_MAX
    } else {
        args.max_bytes
    };
    let mut chunk = loop {
        match fetch(client, &job, run, None, max).await? {
            Some(chunk) => break chunk,
            None if args.follow => tokio::time::sleep(FOLLOW_EVERY).await,
            None => bail!("{job} has not run yet, so it has no output"),
        }
    };
    if let Some(n) = args.tail {
        tail_lines(&mut chunk, n);
    }
    if json && !args.follow {
        print_json(&json!({
            "job": chunk.job.0,
            "run": chunk.run.0,
            "running": chunk.running,
            "dropped_bytes": chunk.dropped,
            "skipped_bytes": chunk.from,
            "output": chunk.segments.iter().map(|s| String::from_utf8_lossy(&s.data)).collect::<String>(),
            "segments": chunk.segments.iter().map(|s| json!({
                "stream": s.stream.as_str(),
                "text": String::from_utf8_lossy(&s.data),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let print = |chunk: &LogChunk| -> anyhow::Result<()> {
        if json {
            // One JSON object per line while following.
            for s in &chunk.segments {
                outln!(
                    "{}",
                    json!({"stream": s.stream.as_str(), "text": String::from_utf8_lossy(&s.data)})
                );
            }
            Ok(())
        } else {
            print_text(chunk)
        }
    };
    if chunk.from > 0 && args.tail.is_none() && !json {
        eprintln!(
            "chimectl: ({} earlier bytes not shown{})",
            chunk.from,
            if chunk.dropped > 0 {
                ", some dropped by the output cap"
            } else {
                ""
            }
        );
    }
    print(&chunk)?;
    if !args.follow {
        return Ok(());
    }
    let run = Some(chunk.run);
    let mut next = chunk.next;
    let mut running = chunk.running;
    loop {
        if !running {
            // One more read: output written just before the end.
            if let Some(last) = fetch(client, &job, run, Some(next), limits::LOG_CHUNK_MAX).await? {
                print(&last)?;
            }
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
        let Some(more) = fetch(client, &job, run, Some(next), limits::LOG_CHUNK_MAX).await? else {
            continue;
        };
        if more.from > next {
            eprintln!(
                "chimectl: ({} bytes dropped by the output cap)",
                more.from - next
            );
        }
        print(&more)?;
        next = more.next;
        running = more.running;
    }
}
