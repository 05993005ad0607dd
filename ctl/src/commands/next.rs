//! `chimectl next`

use crate::cli::NextArgs;
use crate::client::Client;
use crate::output::{print_json, time_json};
use anyhow::{anyhow, bail};
use chime_proto::human::{parse_duration, parse_instant};
use chime_proto::{JobRef, NextQuery, NextSource, Request, Response};
use serde_json::json;

pub async fn run(client: &mut Client, args: NextArgs, json: bool) -> anyhow::Result<()> {
    let from_ms = args
        .from
        .as_deref()
        .map(|f| {
            parse_instant(f, &jiff::tz::TimeZone::system())
                .map(|t| t.as_millisecond())
                .map_err(|e| anyhow!("--from: {e}"))
        })
        .transpose()?;
    let source = if let Some(expr) = args.cron {
        NextSource::Cron {
            expr,
            tz: args.tz.or_else(crate::commands::add::your_zone),
        }
    } else if let Some(every) = args.every {
        let d = parse_duration(&every).map_err(|e| anyhow!("--every: {e}"))?;
        NextSource::Every {
            interval_ms: u64::try_from(d.as_millis())?,
            from_ms,
        }
    } else {
        NextSource::Job(JobRef::parse(
            args.job.as_deref().expect("clap requires a job"),
        ))
    };
    if args.count == 0 {
        bail!("-n must be at least 1");
    }
    let query = NextQuery {
        source,
        count: args.count,
        from_ms: from_ms.map(|f| f - 1),
    };
    let Response::Preview(preview) = client.call(Request::Next(query)).await? else {
        bail!("chimed answered next with something else");
    };
    if json {
        print_json(&json!({
            "schedule": preview.schedule,
            "zone": preview.zone,
            "dst_rule": preview.dst_rule,
            "notes": preview.notes,
            "times": preview.times.iter().map(|t| json!({
                "at": time_json(Some(t.at_ms)),
                "offset_seconds": t.offset_s,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let zone =
        jiff::tz::TimeZone::get(&preview.zone).unwrap_or_else(|_| jiff::tz::TimeZone::system());
    match &preview.dst_rule {
        Some(rule) if rule == "wall clock" => outln!(
            "{} in {} (fixed hour: follows the wall clock across DST changes)",
            preview.schedule,
            preview.zone
        ),
        Some(_) => outln!(
            "{} in {} (wildcard hour: follows real time across DST changes)",
            preview.schedule,
            preview.zone
        ),
        None => outln!("{} ({})", preview.schedule, preview.zone),
    }
    for note in &preview.notes {
        outln!("  note: {note}");
    }
    if preview.times.is_empty() {
        outln!("  no more firings");
    }
    for t in &preview.times {
        let ts = jiff::Timestamp::from_millisecond(t.at_ms)?;
        let local = ts.to_zoned_datetime(zone.clone());
        outln!(
            "  {}  ({})",
            local.strftime("%a %Y-%m-%d %H:%M:%S %:z %Z"),
            ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    Ok(())
}
