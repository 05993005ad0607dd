//! chimectl facing people: one clear line and a non-zero status for every mistake, never a
//! panic or a backtrace.

use chime_tests::{Daemon, bin, shown};
use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_clear_line(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    if code == 1 {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "more than one line: {err}"
        );
        assert!(err.starts_with("chimectl: "), "{err}");
    }
    assert!(
        out.stdout.is_empty(),
        "printed to stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_unreachable_daemon_says_which_socket_and_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let out = Command::new(bin("chimectl"))
        .args(["status"])
        .env("CHIME_SOCKET", &socket)
        .output()
        .unwrap();
    // 69 (EX_UNAVAILABLE): unreachable, which scripts tell from a refusal (1).
    assert_one_clear_line(&out, 69, &socket.display().to_string());
    // The socket was given, so the remedy starts chimed there.
    assert!(
        stderr(&out).contains(&format!(
            "start it with `chimed --socket {}`",
            socket.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_input_gets_one_clear_line() {
    let d = Daemon::start();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["add", "--at", "tomorrowish", "--", "/bin/true"],
            1,
            "--at: \"tomorrowish\" is not a time",
        ),
        (
            &["add", "--at", "2001-01-01 10:00", "--", "/bin/true"],
            1,
            "in the past",
        ),
        (
            &["add", "--in", "5 fortnights", "--", "/bin/true"],
            1,
            "--in: \"5 fortnights\" is not a duration",
        ),
        (&["add", "--in", "-5m", "--", "/bin/true"], 1, "negative"),
        (
            &["add", "--env", "NOEQUALS", "--", "/bin/true"],
            1,
            "expected KEY=VALUE",
        ),
        (
            &["add", "--", "no-such-command-anywhere"],
            1,
            "command not found",
        ),
        (
            &["add", "--name", "has space", "--", "/bin/true"],
            1,
            "job name \"has space\" contains ' '",
        ),
        (
            &["add", "--cwd", "/no/such/place", "--", "/bin/true"],
            1,
            "--cwd: /no/such/place does not exist",
        ),
        (
            &["add", "--", "./no-such-script.sh"],
            1,
            "./no-such-script.sh does not exist",
        ),
        // `--in 5 minutes` unquoted: "5" is the delay and "minutes" would be the command.
        (
            &["add", "--in", "5", "minutes", "/bin/true"],
            1,
            "--in: \"5\" has no unit: write 5s, 5m, 5h or 5d, or quote the words (\"5 minutes\")",
        ),
        // The daemon's own user (the test runs chimed as itself) is held to min_interval too.
        (
            &["add", "--every", "100ms", "--", "/bin/true"],
            1,
            "min_interval = 1s",
        ),
        (&["show", "4242"], 1, "no job 4242"),
        (&["cancel", "nobody"], 1, "no job \"nobody\""),
        (&["logs", "4242"], 1, "no job 4242"),
        (&["ls", "--state", "sleeping"], 1, "--state \"sleeping\""),
        (&["add"], 2, "COMMAND"),
        (
            &[
                "add",
                "--at",
                "2030-01-01 00:00",
                "--in",
                "5m",
                "--",
                "/bin/true",
            ],
            2,
            "cannot be used with",
        ),
        (&["frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, needle) in cases {
        let out = d.ctl(args);
        assert_one_clear_line(&out, *code, needle);
    }
    assert_eq!(d.ctl_json(&["ls"])["jobs"].as_array().unwrap().len(), 0);
}

#[test]
fn a_job_with_no_runs_has_no_logs_yet() {
    let d = Daemon::start();
    let id = d.add(&["--in", "1h", "--", "/bin/true"]);
    let out = d.ctl(&["logs", &id.to_string()]);
    assert_one_clear_line(&out, 1, "has not run yet");
}

/// Issue 10, item 7: `chimectl show 1 | head -1` ended with a panic on the closed pipe.
#[test]
fn a_closed_pipe_ends_chimectl_quietly() {
    let d = Daemon::start();
    // A job whose `show` is far larger than a pipe's buffer.
    let mut args = vec!["add".to_owned(), "--in".into(), "1h".into()];
    for i in 0..800 {
        args.push("--env".into());
        args.push(format!("VARIABLE_{i}={}", "x".repeat(100)));
    }
    args.extend(["--".into(), "/bin/true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctl_ok(&args);
    let err = d.dir.path().join("stderr");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} show 1 2>{} | head -1",
            bin("chimectl").display(),
            err.display()
        ))
        .env("CHIME_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let err = std::fs::read_to_string(err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 10, item 2: a chimed that accepts and never answers does not hang chimectl.
#[test]
fn chimectl_gives_up_on_a_chimed_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Accepts, and never says a word.
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let mut status = Command::new(bin("chimectl"));
    status.args(["--socket", socket.to_str().unwrap(), "status"]);
    let out = chime_tests::output_within(status, std::time::Duration::from_secs(90));
    assert_one_clear_line(&out, 69, "did not answer within 10s");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    drop(held.join());
}

/// `--help` prints its examples as written, one command to a line (issue 13: they ran together
/// into one paragraph), each short enough for an 80-column terminal.
#[test]
fn help_prints_each_example_on_its_own_line() {
    for command in [
        &["add"][..],
        &["next"],
        &["watch"],
        &["timer", "add"],
        &["queue", "set"],
    ] {
        let out = Command::new(bin("chimectl"))
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", shown(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let examples: Vec<&str> = help
            .lines()
            .skip_while(|l| *l != "Examples:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(
            !examples.is_empty(),
            "chimectl {} --help has no \"Examples:\" section of its own:\n{help}",
            command.join(" ")
        );
        for line in examples {
            assert!(
                line.starts_with("  chimectl ") && line.len() <= 80,
                "chimectl {} --help: an example is not one line of its own, or is longer than 80 \
                 columns: {line:?}\n{help}",
                command.join(" ")
            );
        }
    }
}

/// Options that do not apply, and chimectl's own options after the command, are usage errors
/// (exit 2), not silently dropped or passed to the command (issue 13, item 2).
#[test]
fn options_that_would_be_dropped_or_moved_are_usage_errors() {
    let usage_error = |args: &[&str], needle: &str| {
        let out = Command::new(bin("chimectl"))
            .args(["--socket", "/nonexistent/chimed.sock"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", shown(&out));
        let said = stderr(&out);
        assert!(said.contains(needle), "{args:?}: {said}");
    };
    // The zone of an --at time, an --every interval: --tz was accepted and ignored.
    usage_error(
        &[
            "add",
            "--at",
            "2026-12-01 10:00",
            "--tz",
            "Europe/Paris",
            "--",
            "/bin/true",
        ],
        "--tz applies only to --cron",
    );
    usage_error(
        &[
            "add",
            "--every",
            "1h",
            "--tz",
            "Europe/Paris",
            "--",
            "/bin/true",
        ],
        "--tz applies only to --cron",
    );
    usage_error(
        &["timer", "add", "t", "--every", "1h", "--tz", "UTC"],
        "--tz applies only to --cron",
    );
    // An anchor for cron: accepted and ignored.
    usage_error(
        &[
            "add",
            "--cron",
            "0 3 * * *",
            "--from",
            "2026-12-05",
            "--",
            "/bin/true",
        ],
        "--from applies only to --every",
    );
    // `--in 5m` after the command became the command's arguments, and the job ran at once.
    usage_error(
        &["add", "/bin/echo", "hi", "--in", "5m"],
        "--in comes after the command (/bin/echo)",
    );
    usage_error(
        &["add", "/bin/echo", "--name=x"],
        "--name=x comes after the command",
    );
    // A typo of an option was taken for the command ("command not found", exit 1).
    usage_error(
        &["add", "--nmae", "x", "--", "/bin/true"],
        "unknown option --nmae",
    );
    usage_error(
        &["add", "--nmae", "x", "/bin/true"],
        "unknown option --nmae",
    );
}

/// With `--` before the command, every word after it is the command's, options of chimectl's
/// included.
#[test]
fn after_a_double_dash_every_word_is_the_commands() {
    let d = Daemon::start();
    let id = d.add(&["--in", "1h", "--", "/bin/echo", "hi", "--in", "5m"]);
    assert_eq!(
        d.show(id)["command"]["argv"],
        serde_json::json!(["/bin/echo", "hi", "--in", "5m"])
    );
}

/// `chimectl completions SHELL` prints a script the shell loads (bash: loaded and asked to
/// complete; zsh and fish: made), and the manual pages render with `man -l` (issue 13, item 11).
#[test]
fn completions_load_and_manual_pages_render() {
    let script = Command::new(bin("chimectl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success(), "{}", shown(&script));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chimectl.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; complete -p chimectl; COMP_WORDS=(chimectl qu); COMP_CWORD=1; \
             _chimectl chimectl qu chimectl; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", shown(&loaded));
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        said.contains("-F _chimectl chimectl") && said.lines().last() == Some("queue"),
        "bash completes `chimectl qu` with {said:?}"
    );
    // zsh's and fish's scripts are made (loading them needs those shells' completion systems).
    for (shell, marker) in [
        ("zsh", "#compdef chimectl"),
        ("fish", "complete -c chimectl"),
    ] {
        let out = Command::new(bin("chimectl"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(marker),
            "{}",
            shown(&out)
        );
    }
    if Command::new("man").arg("--version").output().is_err() {
        chime_tests::skipped(
            "completions_load_and_manual_pages_render",
            "man is not installed: the pages are made but not rendered",
        );
        return;
    }
    let man1 = dir.path().join("man1");
    let made = Command::new(bin("chimectl"))
        .arg("man")
        .arg(&man1)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", shown(&made));
    let chimed = Command::new(bin("chimed")).arg("--man").output().unwrap();
    assert!(chimed.status.success(), "{}", shown(&chimed));
    std::fs::write(dir.path().join("chimed.8"), &chimed.stdout).unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.push(dir.path().join("chimed.8"));
    assert!(pages.len() > 20, "{pages:?}");
    for page in pages {
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("NAME") && text.contains("SYNOPSIS"),
            "man -l {}: {}",
            page.display(),
            shown(&out)
        );
    }
}

/// `ls --json` carries what scripts need without parsing phrases: the last run's exit code and
/// signal, and the schedule as the fields that recreate it (issue 13, item 9).
#[test]
fn ls_json_is_structured_for_scripts() {
    let d = Daemon::start();
    let failed = d.add(&["--shell", "--", "exit 3"]);
    d.wait_final(failed, std::time::Duration::from_secs(30));
    d.add(&[
        "--name",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--",
        "/bin/true",
    ]);
    d.add(&[
        "--name",
        "often",
        "--every",
        "15m",
        "--from",
        "2030-01-01T00:00:00Z",
        "--",
        "/bin/true",
    ]);
    let jobs = d.ctl_json(&["ls"])["jobs"].as_array().unwrap().clone();
    let find = |id: u64| jobs.iter().find(|j| j["id"] == id).unwrap().clone();
    let first = find(failed);
    assert_eq!(first["last_exit_code"], 3, "{first}");
    assert_eq!(first["last_signal"], serde_json::Value::Null, "{first}");
    let named = |name: &str| jobs.iter().find(|j| j["name"] == name).unwrap().clone();
    assert_eq!(
        named("nightly")["schedule"],
        serde_json::json!({"kind": "cron", "expr": "30 2 * * *", "tz": "Europe/Paris"})
    );
    assert_eq!(
        named("often")["schedule"],
        serde_json::json!({"kind": "every", "interval_ms": 900_000, "from": "2030-01-01T00:00:00.000Z"})
    );
    assert!(
        named("often")["schedule_text"]
            .as_str()
            .unwrap()
            .contains("15m")
    );
}

/// `ls`, `show`, `queue ls` and `status` on an 80-column terminal fit it: no line longer than
/// 80 characters, none ending in a space (issue 13, item 7); through a pipe `ls` keeps every
/// column whole.
#[test]
fn reports_fit_an_80_column_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        chime_tests::skipped(
            "reports_fit_an_80_column_terminal",
            "needs script (util-linux) for a pseudo-terminal",
        );
        return;
    }
    let d = Daemon::start();
    let long_command = "/bin/echo a command line much longer than any terminal is wide, \
                        with arguments that go on and on and on";
    d.add(&[
        "--name",
        "a-rather-long-job-name",
        "--cron",
        "0 3 * * 1-5",
        "--tz",
        "Europe/Paris",
        "--retries",
        "2",
        "--timeout",
        "1h",
        "--",
        "/bin/echo",
        long_command,
    ]);
    let ran = d.add(&["--every", "15m", "--queue", "io", "--", "/bin/true"]);
    d.wait_state(ran, "scheduled", std::time::Duration::from_secs(30));
    d.ctl_ok(&["queue", "set", "io", "--parallel", "2"]);
    let in_colour = |args: &str, no_colour: bool| {
        let chimectl = format!(
            "{} --socket {} {args}",
            bin("chimectl").display(),
            d.socket.display()
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &chimectl, "/dev/null"])
            .env("COLUMNS", "80")
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR");
        if no_colour {
            script.env("NO_COLOR", "1");
        }
        let out = script.output().unwrap();
        assert!(out.status.success(), "{args}: {}", shown(&out));
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
    };
    let on_a_terminal = |args: &str| {
        let coloured = in_colour(args, false);
        // What is seen: the colours' escapes take no room.
        let text = strip_escapes(&coloured);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80 && !line.ends_with(' '),
                "a line of `{args}` on an 80-column terminal is {} characters or ends in a space: \
                 {line:?}\n{text}",
                line.chars().count()
            );
        }
        text
    };
    // Colours on a terminal (the run that exited 0 is green), none with NO_COLOR, none through
    // a pipe.
    assert!(
        in_colour("ls", false).contains('\x1b'),
        "no colours on a terminal"
    );
    assert!(
        !in_colour("ls", true).contains('\x1b'),
        "colours despite NO_COLOR"
    );
    assert!(
        !d.ctl_ok(&["ls"]).contains('\x1b'),
        "colours through a pipe"
    );
    let listed = on_a_terminal("ls");
    assert!(listed.lines().count() >= 3, "{listed}");
    assert!(
        listed.contains("in "),
        "relative times on a terminal: {listed}"
    );
    on_a_terminal("show a-rather-long-job-name");
    on_a_terminal(&format!("show {ran}"));
    on_a_terminal("queue ls");
    on_a_terminal("status");
    // Piped: the whole command, absolute times.
    let piped = d.ctl_ok(&["ls"]);
    assert!(piped.contains(long_command), "{piped}");
}

/// `text` without its SGR escapes (`ESC [ ... m`).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A job that waits says why, in `ls`, `show` and `--json` (issue 13, item 10): its own pause
/// with until when and why, its queue's pause, or its queue being full.
#[test]
fn a_waiting_job_says_why() {
    let d = Daemon::start();
    d.ctl_ok(&["queue", "set", "io", "--parallel", "1"]);
    let busy = d.add(&["--queue", "io", "--", "/bin/sleep", "300"]);
    d.wait_state(busy, "running", std::time::Duration::from_secs(30));
    let behind = d.add(&["--queue", "io", "--", "/bin/true"]);
    let held = d.add(&["--in", "1h", "--", "/bin/true"]);
    d.ctl_ok(&[
        "pause",
        &held.to_string(),
        "--for",
        "1h",
        "--reason",
        "disk swap",
    ]);
    d.ctl_ok(&["pause", "--queue", "backups", "--for", "30m"]);
    let parked = d.add(&["--queue", "backups", "--", "/bin/true"]);
    let why = |id: u64| {
        chime_tests::wait_until(
            std::time::Duration::from_secs(30),
            &format!("job {id} to say why it waits"),
            || d.show(id)["waiting_for"].as_str().map(str::to_owned),
        )
    };
    assert_eq!(why(behind), "queue io is full: 1 of 1 running");
    let own = why(held);
    assert!(
        own.starts_with("until ") && own.ends_with(": disk swap"),
        "{own}"
    );
    let queue = why(parked);
    assert!(
        queue.starts_with("queue backups is paused until "),
        "{queue}"
    );
    let listed = d.ctl_ok(&["ls"]);
    assert!(
        listed.contains("queued (queue io is full: 1 of 1 running)"),
        "{listed}"
    );
    let shown = d.ctl_ok(&["show", &behind.to_string()]);
    assert!(
        shown.contains("state     queued (queue io is full: 1 of 1 running)"),
        "{shown}"
    );
    assert_eq!(d.show(busy)["waiting_for"], serde_json::Value::Null);
    d.ctl_ok(&["cancel", &busy.to_string()]);
}

/// `wait` on a recurring job says which run it waits for (issue 13, item 10).
#[test]
fn wait_on_a_recurring_job_says_which_run() {
    let d = Daemon::start();
    let id = d.add(&[
        "--every",
        "1h",
        "--from",
        "2030-01-01T00:00:00Z",
        "--",
        "/bin/true",
    ]);
    let out = d.ctl(&["wait", &id.to_string(), "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(75), "{}", shown(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "waiting for the next run of job {id}, due 2030-01-01 00:00:00"
        )),
        "{said}"
    );
}

/// `-q` silences output that only confirms what was asked, and nothing else (issue 13, item 11).
#[test]
fn quiet_silences_confirmations_only() {
    let d = Daemon::start();
    let id = d
        .add(&[
            "--every",
            "1h",
            "--from",
            "2030-01-01T00:00:00Z",
            "--",
            "/bin/true",
        ])
        .to_string();
    for args in [
        &["-q", "pause", &id][..],
        &["-q", "resume", &id],
        &["-q", "skip", &id],
        &["-q", "queue", "set", "io", "--parallel", "2"],
        &["-q", "cancel", &id],
    ] {
        assert_eq!(d.ctl_ok(args), "", "chimectl {args:?} printed something");
    }
    // Data is still printed, and a refusal still says why.
    assert!(!d.ctl_ok(&["-q", "ls"]).is_empty());
    let out = d.ctl(&["-q", "cancel", "no-such-job"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-job"), "{}", shown(&out));
    // Said as a confirmation without -q.
    assert!(
        d.ctl_ok(&["queue", "set", "io", "--parallel", "3"])
            .contains("io")
    );
}

/// `ls --watch` redraws the list until it is interrupted (issue 13, item 13).
#[test]
fn ls_watch_redraws_until_interrupted() {
    let d = Daemon::start();
    d.add(&["--in", "1h", "--", "/bin/true"]);
    let mut child = d
        .ctl_command(&["ls", "--watch", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Read until three frames have come (each bounded by the redraw period), then interrupt.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.matches("every 1s: chimectl ls").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three frames of ls --watch within 30 s: {seen}"
        );
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "ls --watch ended by itself: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    chime_tests::signal(child.id(), libc::SIGINT);
    let status = child.wait().unwrap();
    assert!(!status.success(), "interrupted: {status:?}");
    assert!(seen.contains("/bin/true"), "{seen}");
}

/// `pause --json` and `resume --json` give their target as fields, as `watch` does, not as a
/// phrase (issue 13, item 9).
#[test]
fn pause_targets_are_structured_in_json() {
    let d = Daemon::start();
    let id = d.add(&["--in", "1h", "--", "/bin/true"]);
    let paused = d.ctl_json(&["pause", &id.to_string()]);
    assert_eq!(
        paused["target"],
        serde_json::json!({ "job": id }),
        "{paused}"
    );
    let paused = d.ctl_json(&["pause", "--queue", "io"]);
    assert_eq!(
        paused["target"],
        serde_json::json!({ "queue": "io" }),
        "{paused}"
    );
    let resumed = d.ctl_json(&["resume", "--queue", "io"]);
    assert_eq!(
        resumed["target"],
        serde_json::json!({ "queue": "io" }),
        "{resumed}"
    );
    let all = d.ctl_json(&["pause", "--all", "--for", "1m"]);
    assert_eq!(all["target"], serde_json::json!({ "all": true }), "{all}");
    d.ctl_json(&["resume", "--all"]);
}
