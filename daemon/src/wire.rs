//! The one vocabulary between what chimed stores and what it sends: conversions from stored
//! shapes ([`crate::job`]) to wire shapes ([`chime_proto`]).

use crate::job::Pause;
use chime_proto::{Command, PauseInfo};

/// A command as one line for the log, at most 1 KiB: an argv with its words quoted where they
/// need it, or a shell command as it is.
pub fn command_line(command: &Command) -> String {
    const MAX: usize = 1024;
    let mut line = match command {
        Command::Argv(argv) => argv
            .iter()
            .map(|word| {
                if !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
                {
                    word.clone()
                } else {
                    format!("'{}'", word.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Command::Shell(script) => script.clone(),
        Command::Timer => "(timer)".into(),
    };
    if line.len() > MAX {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

pub fn pause_info(pause: &Pause) -> PauseInfo {
    PauseInfo {
        since_ms: pause.since_ms,
        until_ms: pause.until_ms,
        reason: pause.reason.clone(),
        by_uid: pause.by_uid,
    }
}
