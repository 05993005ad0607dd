//! `chimectl logs`

use crate::cli::LogsArgs;
use crate::client::Client;
use crate::output::print_json;
use anyhow::bail;
use chime_proto::{JobRef, LogsRequest, Request, Response, RunId};
use serde_json::json;
use std::io::Write;

pub async fn run(client: &mut Client, args: LogsArgs, json: bool) -> anyhow::Result<()> {
    let request = Request::Logs(LogsRequest {
        job: JobRef::parse(&args.job),
        run: args.run.map(RunId),
        max_bytes: args.max_bytes,
    });
    let Response::Logs(chunk) = client.call(request).await? else {
        bail!("chimed answered logs with something else");
    };
    if json {
        print_json(&json!({
            "job": chunk.job.0,
            "run": chunk.run.0,
            "running": chunk.running,
            "skipped_bytes": chunk.skipped,
            "output": String::from_utf8_lossy(&chunk.data),
        }));
        return Ok(());
    }
    if chunk.skipped > 0 {
        eprintln!(
            "chimectl: ({} earlier bytes not shown; raise --max-bytes)",
            chunk.skipped
        );
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&chunk.data)?;
    stdout.flush()?;
    Ok(())
}
