//! `chimectl edit`: a job's spec as a job file, in your editor, applied as `add --replace`.
//!
//! As `crontab -e`: chimed writes the job file ([`Request::JobFile`]), chimectl puts it in a
//! private temporary directory (0700, the file 0600), runs `$VISUAL`, else `$EDITOR`, else `vi`
//! through `sh` (so `EDITOR="code --wait"` works, as with git), and sends the text back
//! ([`Request::Edit`]), where chimed's job-file parser checks it. Unchanged or emptied, nothing
//! is sent. Refused, the errors are printed and, on a terminal, the same text can be edited
//! again; otherwise the text is kept where it was edited, and the exit status is 1.
//!
//! No connection is held while the editor runs (chimed closes idle ones): the file carries the
//! job's revision instead, and chimed refuses the edit if someone changed the job meanwhile.

use crate::client::{Client, Refused};
use crate::commands::add::{changed_since, print_added, shown};
use crate::output::print_json;
use crate::socket::Socket;
use anyhow::{Context, bail};
use chime_proto::request::limits::JOB_FILE_TEXT_MAX;
use chime_proto::{EditJob, ErrorCode, JobFile, JobRef, Request, Response};
use serde_json::json;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

pub async fn run(socket: &Socket, job: &str, json: bool) -> anyhow::Result<ExitCode> {
    let file = {
        let mut client = Client::connect(socket).await?;
        let Response::JobFile(file) = client.call(Request::JobFile(JobRef::parse(job))).await?
        else {
            bail!("chimed answered edit with something else");
        };
        file
    };
    let dir = tempfile::Builder::new()
        .prefix("chimectl-edit.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("cannot make a private temporary directory for the job file (see TMPDIR)")?;
    let path = dir.path().join(&file.file_name);
    let mut created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    created
        .write_all(file.text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(created);
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    loop {
        let edited = match edit(&path) {
            Ok(text) => text,
            Err(err) => {
                let kept = dir.keep();
                return Err(err.context(format!(
                    "nothing changed; the file is kept in {}",
                    kept.join(&file.file_name).display()
                )));
            }
        };
        let text = match edited {
            Edited::Text(text) => text,
            Edited::Unreadable(why) => {
                eprintln!("chimectl: {why}");
                if interactive && again()? {
                    continue;
                }
                return Ok(kept(dir, &file.file_name));
            }
        };
        if text == file.text {
            return Ok(nothing(&file, "no change", json));
        }
        if is_empty(&text) {
            return Ok(nothing(&file, "aborted: empty file", json));
        }
        match apply(socket, &file, text, json).await {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            // The file is wrong: say so, and offer to fix it.
            Err(err)
                if err
                    .downcast_ref::<Refused>()
                    .is_some_and(|r| r.0.code == ErrorCode::BadRequest) =>
            {
                eprintln!("chimectl: {err:#}");
                if interactive && again()? {
                    continue;
                }
                return Ok(kept(dir, &file.file_name));
            }
            Err(err) => {
                let kept = dir.keep();
                return Err(err.context(format!(
                    "nothing changed; your edit is kept in {}",
                    kept.join(&file.file_name).display()
                )));
            }
        }
    }
}

/// The edited text, or why it cannot be sent.
enum Edited {
    Text(String),
    Unreadable(String),
}

/// Runs the editor on `path` and reads the file back (at most [`JOB_FILE_TEXT_MAX`] bytes).
fn edit(path: &Path) -> anyhow::Result<Edited> {
    let editor = ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(std::env::var_os)
        .find(|e| !e.is_empty())
        .unwrap_or_else(|| "vi".into());
    // As git runs it: the words of $EDITOR split by the shell, the file as one argument.
    let mut script = editor.clone();
    script.push(" \"$@\"");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .arg(&editor)
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?} with /bin/sh"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); set VISUAL or EDITOR to the one you use");
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(JOB_FILE_TEXT_MAX as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {} back", path.display()))?;
    if bytes.len() > JOB_FILE_TEXT_MAX {
        return Ok(Edited::Unreadable(format!(
            "{} has more than {JOB_FILE_TEXT_MAX} bytes; a job file may have at most that",
            path.display()
        )));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Edited::Text(text),
        Err(_) => Edited::Unreadable(format!(
            "{} is not UTF-8 text; a job file is TOML, which is",
            path.display()
        )),
    })
}

/// Whether the file says nothing: only blank lines and comments are left.
fn is_empty(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#'))
}

/// Sends the edited text and prints what changed, as `add --replace` does.
async fn apply(socket: &Socket, file: &JobFile, text: String, json: bool) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let job = JobRef::Id(file.id);
    let before = shown(&mut client, job.clone()).await;
    let edit = EditJob {
        id: file.id,
        revision: file.revision,
        text,
    };
    let Response::Added(added) = client.call(Request::Edit(edit)).await? else {
        bail!("chimed answered edit with something else");
    };
    let changed = match &before {
        Some(before) => changed_since(&mut client, before, job).await,
        None => Vec::new(),
    };
    print_added(&added, file.name.as_deref(), Some(&changed), json);
    Ok(())
}

/// Nothing was sent: says why.
fn nothing(file: &JobFile, why: &str, json: bool) -> ExitCode {
    if json {
        print_json(&json!({
            "id": file.id.0,
            "name": file.name,
            "applied": false,
            "reason": why,
            "changed": [],
        }));
    } else {
        outln!("{why}");
    }
    ExitCode::SUCCESS
}

/// Asks on the terminal whether to edit the refused text again (yes unless told no).
fn again() -> anyhow::Result<bool> {
    eprint!("edit again? [Y/n] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(!matches!(answer.trim().to_ascii_lowercase().as_str(), "n" | "no") && !answer.is_empty())
}

/// Keeps the refused edit where it is, says where, and fails.
fn kept(dir: tempfile::TempDir, file_name: &str) -> ExitCode {
    let dir = dir.keep();
    eprintln!(
        "chimectl: nothing changed; your edit is kept in {}",
        dir.join(file_name).display()
    );
    ExitCode::FAILURE
}
