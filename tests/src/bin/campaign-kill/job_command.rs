//! The command every job of the campaign runs: this very binary, as
//! `campaign-kill __run LOG SLEEP_MS FAIL_UNTIL`.
//!
//! A run appends a line to LOG when it starts and one when it ends, each in a single write(2)
//! to a file opened with `O_APPEND`, so that the lines of concurrent runs never mix:
//!
//! ```text
//! S JOB RUN ATTEMPT PID T_US          (started)
//! E JOB RUN ATTEMPT PID T_US CODE     (ends with exit code CODE)
//! ```
//!
//! JOB, RUN and ATTEMPT come from the environment chimed gives every run (`CHIME_JOB_ID`,
//! `CHIME_RUN_ID`, `CHIME_ATTEMPT`); T_US is wall-clock microseconds. The run sleeps SLEEP_MS,
//! then exits 1 while its attempt is below FAIL_UNTIL, else 0. On SIGTERM (a cancel, a timeout)
//! it writes its end line at once and exits 143, so that every run chimed ends has an end time;
//! only SIGKILL ends it without one (the campaign's, of the runs a killed chimed left behind).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// The first argument that makes this binary a job's command.
pub const MODE: &str = "__run";

/// The exit code of a run ended by SIGTERM.
pub const TERMINATED: i32 = 143;

/// `argv` of a job: this binary in run mode.
pub fn argv(exe: &str, log: &str, sleep_ms: u64, fail_until: u32) -> Vec<String> {
    vec![
        exe.to_owned(),
        MODE.to_owned(),
        log.to_owned(),
        sleep_ms.to_string(),
        fail_until.to_string(),
    ]
}

/// One line of the execution log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Start {
        job: u64,
        run: u64,
        attempt: u32,
        pid: u32,
        at_us: i64,
    },
    End {
        job: u64,
        run: u64,
        at_us: i64,
        code: i32,
    },
}

impl Line {
    pub fn parse(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.split(' ').collect();
        match f.as_slice() {
            ["S", job, run, attempt, pid, at] => Some(Self::Start {
                job: job.parse().ok()?,
                run: run.parse().ok()?,
                attempt: attempt.parse().ok()?,
                pid: pid.parse().ok()?,
                at_us: at.parse().ok()?,
            }),
            ["E", job, run, _attempt, _pid, at, code] => Some(Self::End {
                job: job.parse().ok()?,
                run: run.parse().ok()?,
                at_us: at.parse().ok()?,
                code: code.parse().ok()?,
            }),
            _ => None,
        }
    }
}

pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// Runs as a job's command (`args` after [`MODE`]).
pub fn run(args: &[String]) -> ExitCode {
    let [log, sleep_ms, fail_until] = args else {
        eprintln!("campaign-kill {MODE}: expected LOG SLEEP_MS FAIL_UNTIL, got {args:?}");
        return ExitCode::from(2);
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "?".into());
    let (job, run, attempt) = (
        var("CHIME_JOB_ID"),
        var("CHIME_RUN_ID"),
        var("CHIME_ATTEMPT"),
    );
    let (Ok(sleep_ms), Ok(fail_until), Ok(attempt_n)) = (
        sleep_ms.parse::<u64>(),
        fail_until.parse::<u32>(),
        attempt.parse::<u32>(),
    ) else {
        eprintln!("campaign-kill {MODE}: bad arguments {args:?} or CHIME_ATTEMPT {attempt:?}");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for one timer and one signal");
    let code = runtime.block_on(async {
        // The handler first: a SIGTERM before it ends the run before its start line, which is
        // fine (a run without lines needs no end).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        let pid = std::process::id();
        append(
            log,
            &format!("S {job} {run} {attempt} {pid} {}\n", now_us()),
        );
        let code = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                i32::from(attempt_n < fail_until)
            }
            _ = term.recv() => TERMINATED,
        };
        append(
            log,
            &format!("E {job} {run} {attempt} {pid} {} {code}\n", now_us()),
        );
        code
    });
    ExitCode::from(code as u8)
}

/// Appends `line` in one write(2) on an `O_APPEND` descriptor.
fn append(log: &str, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .expect("open the execution log");
    file.write_all(line.as_bytes())
        .expect("append to the execution log");
}
