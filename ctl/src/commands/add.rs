//! `chimectl add`

use crate::cli::AddArgs;
use crate::client::Client;
use crate::output::{print_json, time_json};
use anyhow::{Context, bail};
use chime_proto::human::{parse_duration, parse_instant};
use chime_proto::{Command, JobSpec, Request, Response, Schedule};
use serde_json::json;
use std::path::Path;

/// Sends a spec built by [`spec`] and prints the new id.
pub async fn submit(client: &mut Client, spec: JobSpec, json: bool) -> anyhow::Result<()> {
    let name = spec.name.clone();
    let Response::Added(added) = client.call(Request::Add(spec)).await? else {
        bail!("chimed answered add with something else");
    };
    if json {
        print_json(&json!({
            "id": added.id.0,
            "name": name,
            "due_at": time_json(Some(added.due_at_ms)),
        }));
    } else {
        println!("{}", added.id);
    }
    Ok(())
}

/// Builds the job spec, checking what can be checked here with a better message.
pub fn spec(args: AddArgs) -> anyhow::Result<JobSpec> {
    let schedule = match (&args.at, &args.delay) {
        (Some(at), _) => {
            let instant = parse_instant(at, &jiff::tz::TimeZone::system())
                .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
            let now = jiff::Timestamp::now();
            if instant.as_millisecond() < now.as_millisecond() - 1000 {
                bail!("--at {at:?}: that time is in the past; leave out --at to run now");
            }
            Schedule::At(instant.as_millisecond())
        }
        (None, Some(delay)) => {
            let delay = parse_duration(delay).map_err(|e| anyhow::anyhow!("--in: {e}"))?;
            Schedule::After(
                u64::try_from(delay.as_millis()).context("--in: the delay is too long")?,
            )
        }
        (None, None) => Schedule::Now,
    };
    let command = if args.shell {
        Command::Shell(args.command.join(" "))
    } else {
        let mut argv = args.command;
        if !argv[0].contains('/') {
            argv[0] = find_in_path(&argv[0]).with_context(|| {
                format!("command not found: {:?} (searched your PATH); give its full path, or use --shell", argv[0])
            })?;
        }
        Command::Argv(argv)
    };
    let cwd = match args.cwd {
        Some(dir) => std::path::absolute(&dir)
            .with_context(|| format!("--cwd {}: cannot make it absolute", dir.display()))?,
        None => std::env::current_dir().context("cannot read the current directory; give --cwd")?,
    };
    let cwd = cwd
        .to_str()
        .with_context(|| format!("working directory {} is not valid UTF-8", cwd.display()))?
        .to_owned();
    let mut env: Vec<(String, String)> = Vec::new();
    if args.env_inherit {
        env.extend(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        );
    }
    for entry in &args.env {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("--env {entry:?}: expected KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--env {entry:?}: the name before '=' is empty");
        }
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }
    Ok(JobSpec {
        name: args.name,
        command,
        cwd,
        env,
        schedule,
    })
}

fn find_in_path(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").ok()?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.to_str().map(str::to_owned))
}
