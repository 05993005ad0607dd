//! The README's tour, run (issue 13): every `$ chimectl ...` line of its `console` blocks runs,
//! in order, against a real chimed, and where the README shows what it prints, the real output
//! has that shape, so that the README cannot drift from the program.
//!
//! Shape: an output without times must be the same; a table's header must be the same, with as
//! many rows; output with times must have as many lines. Programs the tour names that a test
//! machine lacks are replaced by `/bin/true`; `watch`, which runs until interrupted, runs for
//! 2 s; a limit the host cannot enforce is expected to be refused.

use chime_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One `$` line of the README and the lines it shows after it.
#[derive(Debug)]
struct Example {
    line: String,
    shown: Vec<String>,
}

fn examples() -> Vec<Example> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.starts_with("```console") {
            in_console = true;
            continue;
        }
        if line.starts_with("```") {
            in_console = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Example {
                line: command.to_owned(),
                shown: Vec::new(),
            });
        } else if let Some(last) = out.last_mut() {
            last.shown.push(line.to_owned());
        }
    }
    out
}

fn has_time(text: &str) -> bool {
    text.as_bytes()
        .windows(10)
        .any(|w| w[4] == b'-' && w[7] == b'-' && w[..4].iter().all(u8::is_ascii_digit))
}

#[test]
fn the_tour_runs_as_the_readme_shows() {
    let d = Daemon::start();
    let examples = examples();
    assert!(examples.len() > 20, "the README's tour: {examples:?}");
    let controllers = d.ctl_json(&["status"])["containment"]["controllers"].clone();
    let has = |name: &str| {
        controllers
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == name))
    };
    // `chimectl` is this build's, on this daemon's socket; `sudo` is nothing (the test is root
    // or runs chimed as itself).
    let prelude = format!(
        "chimectl() {{ {} --socket {} \"$@\"; }}; sudo() {{ \"$@\"; }};",
        bin("chimectl").display(),
        d.socket.display()
    );
    let has_make = Command::new("make").arg("--version").output().is_ok();
    let mut ran = 0;
    for example in &examples {
        let line = &example.line;
        if !line.starts_with("chimectl ") && !line.starts_with("sudo chimectl ") {
            continue; // building and aliasing chimectl: done by the tests' harness
        }
        let mut line = line
            .replace("/usr/sbin/logrotate", "/bin/true")
            .replace("/usr/local/bin/sync-mirror", "/bin/true");
        if !has_make {
            line = line.replace("-- make ", "-- true ");
        }
        let watching = line.starts_with("chimectl watch");
        let script = if watching {
            format!(
                "{prelude} timeout 2 sh -c '{}'",
                line.replace('\'', "'\\''")
            )
            .replace(
                "chimectl watch",
                &format!(
                    "{} --socket {} watch",
                    bin("chimectl").display(),
                    d.socket.display()
                ),
            )
        } else {
            format!("{prelude} {line}")
        };
        // `logs N` shows a run: wait for it first.
        if let Some(id) = line
            .strip_prefix("chimectl logs ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse::<u64>().ok())
        {
            d.wait_final(id, Duration::from_secs(30));
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("TZ", "UTC")
            .current_dir(d.dir.path())
            .output()
            .unwrap();
        let limits_refused = line.contains("--memory-max") && !has("memory");
        let expected = if watching {
            Some(124)
        } else if limits_refused {
            Some(1)
        } else {
            Some(0)
        };
        assert_eq!(
            out.status.code(),
            expected,
            "README line `{}`: {}",
            example.line,
            shown(&out)
        );
        ran += 1;
        // What `watch` prints depends on what happens meanwhile: its exit is checked above.
        if limits_refused || watching || example.shown.is_empty() {
            continue;
        }
        let real = String::from_utf8_lossy(&out.stdout);
        let real: Vec<&str> = real.lines().collect();
        let shown_text = example.shown.join("\n");
        if example.shown[0].starts_with("ID ") {
            let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            assert_eq!(
                words(real[0]),
                words(&example.shown[0]),
                "README line `{}`: the table's header differs:\n{}\nREADME:\n{shown_text}",
                example.line,
                real.join("\n")
            );
            assert_eq!(
                real.len(),
                example.shown.len(),
                "README line `{}`: rows:\n{}\nREADME:\n{shown_text}",
                example.line,
                real.join("\n")
            );
        } else if has_time(&shown_text) {
            assert!(
                real.len() >= example.shown.len().min(1),
                "README line `{}` printed nothing like:\n{shown_text}",
                example.line
            );
        } else {
            assert_eq!(
                real.join("\n"),
                shown_text,
                "README line `{}` prints something else",
                example.line
            );
        }
    }
    assert!(ran > 20, "{ran} lines run");
}

/// The command syntaxes of the README's table "What each command takes": the backquoted spans
/// of each row's first cell.
fn table_syntaxes(readme: &str) -> Vec<String> {
    let start = readme
        .find("What each command takes")
        .expect("the README's command table");
    let mut rows = Vec::new();
    for line in readme[start..].lines().skip(1) {
        if line.starts_with("|---") || line.starts_with("| command") {
            continue;
        }
        if !line.starts_with("| `") {
            if rows.is_empty() {
                continue;
            }
            break;
        }
        let first = line[2..].split(" | ").next().unwrap();
        rows.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    rows
}

/// A syntax's shortest form: optional `[...]` parts left out, the first of each set of
/// alternatives (`a \| b`) taken.
fn shortest(syntax: &str) -> Vec<String> {
    let mut depth = 0u32;
    let mut kept = String::new();
    for c in syntax.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    let first = kept.split(" \\| ").next().unwrap();
    first
        .split_whitespace()
        .filter(|w| *w != "...")
        .map(|w| w.split("\\|").next().unwrap().to_owned())
        .collect()
}

/// The leading words of a syntax that name the command (`queue set`, `ls`).
fn command_words(syntax: &str) -> Vec<String> {
    syntax
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_owned)
        .collect()
}

/// The long options a help text lists (`--name <NAME>`, `-n, --count <N>`).
fn help_options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            // Option lines are indented by two (`-n, --count`) or six (`--name`); their
            // descriptions further.
            let indent = l.len() - l.trim_start().len();
            if indent > 6 {
                return None;
            }
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .filter(|r| !r.starts_with('-'))
                .map_or(l, |r| r.split_once(", ").map_or(l, |(_, rest)| rest));
            let option = l.strip_prefix("--")?.split([' ', '=', '\t']).next()?;
            (!option.is_empty()).then(|| format!("--{option}"))
        })
        .collect()
}

/// The subcommands a help text lists under "Commands:" (but `help`).
fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_command_table_is_the_program() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let syntaxes = table_syntaxes(&readme);
    assert!(
        syntaxes.len() > 20,
        "the README's command table: {syntaxes:?}"
    );
    let help = |words: &[String]| {
        let out = Command::new(bin("chimectl"))
            .args(words)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chimectl {words:?} --help: {}",
            shown(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Every command of the table exists, with every option the table gives it.
    let mut documented = Vec::new();
    for syntax in &syntaxes {
        let words = command_words(syntax);
        assert!(!words.is_empty(), "README: `{syntax}` names no command");
        let text = help(&words);
        let known = help_options(&text);
        for option in syntax
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            assert!(
                known.iter().any(|k| k == option),
                "README: `{syntax}`: chimectl {} has no {option} (it has {known:?})",
                words.join(" ")
            );
        }
        documented.push(words);
    }
    // And every command and option of the program is in the README.
    let top = help(&[]);
    let mut missing = Vec::new();
    for command in help_commands(&top) {
        let sub = help(std::slice::from_ref(&command));
        let leaves: Vec<Vec<String>> = match help_commands(&sub) {
            subs if subs.is_empty() => vec![vec![command.clone()]],
            subs => subs.into_iter().map(|s| vec![command.clone(), s]).collect(),
        };
        for leaf in leaves {
            assert!(
                documented.contains(&leaf),
                "chimectl {} is not in the README's command table",
                leaf.join(" ")
            );
            for option in help_options(&help(&leaf)) {
                if option == "--help" || option == "--version" {
                    continue;
                }
                let word =
                    |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
                let named = readme.match_indices(&option).any(|(at, _)| {
                    !word(readme[..at].chars().next_back())
                        && !word(readme[at + option.len()..].chars().next())
                });
                if !named {
                    missing.push(format!("chimectl {} {option}", leaf.join(" ")));
                }
            }
        }
    }

    assert!(missing.is_empty(), "not in the README: {missing:?}");

    // Each row, in its shortest form, runs against a real chimed.
    let d = Daemon::start();
    let finished = d.add(&["--name", "finished", "--", "/bin/echo", "hi"]);
    let failed = d.add(&["--name", "failed", "--", "/bin/false"]);
    d.wait_final(finished, Duration::from_secs(30));
    d.wait_final(failed, Duration::from_secs(30));
    d.add(&["--name", "running", "--", "/bin/sleep", "300"]);
    d.add(&["--name", "hourly", "--every", "1h", "--", "/bin/true"]);
    d.add(&["--name", "spare", "--in", "1h", "--", "/bin/true"]);
    d.add(&["--name", "removable", "--in", "1h", "--", "/bin/true"]);
    wait_until(Duration::from_secs(30), "the job `running` to run", || {
        (d.ctl_json(&["show", "running"])["state"] == "running").then_some(())
    });
    let mut ran = 0;
    for syntax in &syntaxes {
        let words = command_words(syntax);
        let command = words.join(" ");
        // The job each command acts on, in a state it acts on.
        let job = match command.as_str() {
            "kill" => "running",
            "retry" => "failed",
            "skip" | "trigger" | "next" => "hourly",
            "cancel" => "spare",
            "rm" => "removable",
            _ => "finished",
        };
        let argv: Vec<String> = shortest(syntax)
            .into_iter()
            .flat_map(|w| match w.as_str() {
                "ID" => vec![job.to_owned()],
                "NAME" if command == "queue set" => vec!["io".to_owned()],
                "NAME" => vec![format!("new-{ran}")],
                "WHEN" => vec!["--in".to_owned(), "1h".to_owned()],
                "DURATION" => vec!["1h".to_owned()],
                "N" => vec!["2".to_owned()],
                "COMMAND..." => vec!["/bin/true".to_owned()],
                other => {
                    assert!(
                        !other.chars().any(|c| c.is_ascii_uppercase()),
                        "README: `{syntax}`: no value for the placeholder {other} in this test"
                    );
                    vec![other.to_owned()]
                }
            })
            .collect();
        if command == "rm" {
            d.ctl_ok(&["cancel", "removable"]);
        }
        let mut cmd = d.ctl_command(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        // `edit` with an editor that changes nothing; `watch` follows until interrupted.
        cmd.env("EDITOR", "true").env("VISUAL", "true");
        let out = if command == "watch" {
            let mut wrapped = Command::new("timeout");
            wrapped.arg("2").arg(cmd.get_program()).args(cmd.get_args());
            for (key, value) in cmd.get_envs() {
                if let Some(value) = value {
                    wrapped.env(key, value);
                }
            }
            wrapped.output().unwrap()
        } else {
            cmd.output().unwrap()
        };
        let expected = if command == "watch" { 124 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "README: `{syntax}` as `chimectl {}`: {}",
            argv.join(" "),
            shown(&out)
        );
        ran += 1;
    }
    assert_eq!(ran, syntaxes.len());
}
