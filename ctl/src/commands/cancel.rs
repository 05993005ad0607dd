//! `chimectl cancel`

use crate::client::Client;
use crate::output::print_json;
use anyhow::bail;
use chime_proto::{JobRef, JobState, Request, Response};
use serde_json::json;

pub async fn run(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Cancelled(cancelled) = client.call(Request::Cancel(JobRef::parse(job))).await?
    else {
        bail!("chimed answered cancel with something else");
    };
    if json {
        print_json(&json!({ "id": cancelled.id.0, "state": cancelled.state.as_str() }));
    } else if cancelled.state == JobState::Running {
        confirm!(
            "job {}: cancelling; its processes got SIGTERM",
            cancelled.id
        );
    } else {
        confirm!("job {}: cancelled", cancelled.id);
    }
    Ok(())
}
