//! `chimectl timer add`: a job with no command, whose firing is an event.

use crate::cli::TimerAddArgs;
use crate::client::Client;
use crate::commands::add::{duration, when};
use crate::output::{print_json, time_json};
use anyhow::bail;
use chime_proto::{Command, ExecSpec, JobSpec, Request, Response, SubmitJob};
use serde_json::json;

pub async fn add(client: &mut Client, args: TimerAddArgs, json: bool) -> anyhow::Result<()> {
    let when = when(&args.when)?;
    if matches!(when.schedule, chime_proto::ScheduleSpec::Now) {
        bail!("a timer needs a schedule: --at, --in, --every or --cron");
    }
    let spec = SubmitJob {
        job: JobSpec {
            name: Some(args.name.clone()),
            replace: args.replace,
            ..when.job(Command::Timer, "/".into())
        },
        exec: ExecSpec {
            keep_runs: args.keep_runs,
            retention_ms: args
                .retention
                .as_deref()
                .map(|r| duration(r, "--retention"))
                .transpose()?,
            ..ExecSpec::default()
        },
        journal: false,
    };
    let Response::Added(added) = client.call(Request::Submit(Box::new(spec))).await? else {
        bail!("chimed answered timer add with something else");
    };
    if json {
        print_json(&json!({
            "id": added.id.0,
            "name": args.name,
            "due_at": time_json(Some(added.due_at_ms)),
        }));
    } else {
        outln!("{}", added.id);
    }
    Ok(())
}
