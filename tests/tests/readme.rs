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
