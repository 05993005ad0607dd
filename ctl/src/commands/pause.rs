//! `chimectl pause`, `resume`, `skip` and `trigger`

use crate::cli::{PauseArgs, TargetArgs};
use crate::client::Client;
use crate::output::{describe_pause, local_tz, pause_json, print_json, time_json, when};
use anyhow::{anyhow, bail};
use chime_proto::human::{parse_duration, parse_instant};
use chime_proto::{JobRef, PauseRequest, PauseTarget, Request, Response};
use serde_json::json;

fn target(args: &TargetArgs) -> PauseTarget {
    if args.all {
        PauseTarget::All
    } else if let Some(queue) = &args.queue {
        PauseTarget::Queue(queue.clone())
    } else {
        PauseTarget::Job(JobRef::parse(
            args.job.as_deref().expect("clap requires a target"),
        ))
    }
}

pub async fn pause(client: &mut Client, args: PauseArgs, json: bool) -> anyhow::Result<()> {
    let for_ms = args
        .for_
        .as_deref()
        .map(|d| {
            let d = parse_duration(d).map_err(|e| anyhow!("--for: {e}"))?;
            if d.is_zero() {
                bail!("--for must be longer than zero");
            }
            Ok(u64::try_from(d.as_millis())?)
        })
        .transpose()?;
    let until_ms = args
        .until
        .as_deref()
        .map(|u| {
            let t = parse_instant(u, &jiff::tz::TimeZone::system())
                .map_err(|e| anyhow!("--until: {e}"))?;
            if t <= jiff::Timestamp::now() {
                bail!("--until {u:?}: that time is in the past");
            }
            Ok(t.as_millisecond())
        })
        .transpose()?;
    let request = Request::Pause(PauseRequest {
        target: target(&args.target),
        until_ms,
        for_ms,
        reason: args.reason,
    });
    let Response::Paused(paused) = client.call(request).await? else {
        bail!("chimed answered pause with something else");
    };
    if json {
        print_json(
            &json!({ "target": crate::commands::watch::target_json(&paused.target), "pause": pause_json(Some(&paused.pause)) }),
        );
    } else {
        confirm!(
            "{}: {}",
            paused.target,
            describe_pause(&paused.pause, &local_tz())
        );
    }
    Ok(())
}

pub async fn resume(client: &mut Client, args: TargetArgs, json: bool) -> anyhow::Result<()> {
    let Response::Resumed(resumed) = client.call(Request::Resume(target(&args))).await? else {
        bail!("chimed answered resume with something else");
    };
    if json {
        print_json(
            &json!({ "target": crate::commands::watch::target_json(&resumed.target), "released": resumed.released }),
        );
    } else {
        confirm!("{}: resumed", resumed.target);
    }
    Ok(())
}

pub async fn skip(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Skipped(skipped) = client.call(Request::Skip(JobRef::parse(job))).await? else {
        bail!("chimed answered skip with something else");
    };
    if json {
        print_json(&json!({
            "id": skipped.id.0,
            "skipped_due_at": time_json(Some(skipped.skipped_due_ms)),
            "next_due_at": time_json(skipped.next_due_ms),
        }));
    } else {
        let tz = local_tz();
        confirm!(
            "job {}: skipped {}; next {}",
            skipped.id,
            when(Some(skipped.skipped_due_ms), &tz),
            when(skipped.next_due_ms, &tz)
        );
    }
    Ok(())
}

pub async fn trigger(client: &mut Client, job: &str, json: bool) -> anyhow::Result<()> {
    let Response::Triggered(t) = client.call(Request::Trigger(JobRef::parse(job))).await? else {
        bail!("chimed answered trigger with something else");
    };
    if json {
        print_json(&json!({ "id": t.id.0, "state": t.state.as_str() }));
    } else {
        confirm!("job {}: {}", t.id, t.state);
    }
    Ok(())
}
