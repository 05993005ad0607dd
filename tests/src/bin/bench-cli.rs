//! Benchmark: one submission from the command line, as a person or a script makes it, against
//! the peers a user would otherwise type: `at` (atd) and, where installed, `pueue`.
//!
//! Each submission is a whole process, timed from its spawn to its exit: `chimectl add --in 1h
//! -- /bin/true` (acknowledged once committed with fsync), `at now + 1 hour` with `/bin/true` on
//! its standard input (atd's spool file), `pueue add --delay 1h -- /bin/true`. The tools take
//! turns, `--count` submissions each per round, for `--rounds` rounds, so that all of them meet
//! the machine in the same state; each round's ratio compares its own medians, and the median of
//! the rounds' ratios is the figure to quote. Also timed: `chimectl --version` (the client's
//! start and exit, with no request), the floor of any chimectl command.
//!
//! A peer that is not installed (or whose daemon cannot be started) is skipped with a message.
//! `atd` is started in the foreground for the run unless one is already running, and the `at`
//! jobs this bench made are removed at the end (`atrm`); `pueued` likewise, with the bench's own
//! configuration in a temp dir.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-cli -- [--count 100] [--rounds 3]`

use chime_tests::Daemon;
use chime_tests::bench::{self, percentile};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One timed submission through `command` (stdin: `input`); panics when it fails, since a
/// failed submission would be timed as a fast one.
fn timed(mut command: Command, input: Option<&str>) -> (Duration, String) {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("start the command");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn is_installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// atd for the run: the one running, or one started here in the foreground (stopped at drop).
struct Atd(Option<Child>);

impl Atd {
    fn start() -> Result<Self, String> {
        if !is_installed("at") {
            return Err("at is not installed (Debian: apt-get install at)".into());
        }
        let running = Command::new("pgrep")
            .args(["-x", "atd"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if running {
            return Ok(Self(None));
        }
        let atd = ["/usr/sbin/atd", "atd"]
            .into_iter()
            .find(|p| Path::new(p).exists() || is_installed(p))
            .ok_or("atd is not installed")?;
        let child = Command::new(atd)
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start atd: {e} (it needs root for its spool)"))?;
        Ok(Self(Some(child)))
    }
}

impl Drop for Atd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A peer's time for one submission: `Some(command, stdin)` per call.
type Submit<'a> = Box<dyn Fn() -> (Command, Option<&'static str>) + 'a>;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let count = bench::arg("--count", 100) as usize;
    let rounds = bench::arg("--rounds", 3) as usize;
    println!(
        "chime bench-cli: {count} submissions per tool per round, {rounds} rounds, whole processes from spawn to exit"
    );
    let d = Daemon::start();
    let chimectl = chime_tests::bin("chimectl");
    let socket = d.socket.clone();

    let mut tools: Vec<(&str, Submit<'_>)> = vec![(
        "chimectl add",
        Box::new(|| {
            let mut c = Command::new(&chimectl);
            c.arg("--socket")
                .arg(&socket)
                .args(["add", "--in", "1h", "--", "/bin/true"]);
            (c, None)
        }),
    )];
    let mut at_jobs: Vec<String> = Vec::new();
    let atd = match Atd::start() {
        Ok(atd) => {
            tools.push((
                "at",
                Box::new(|| {
                    let mut c = Command::new("at");
                    c.args(["now", "+", "1", "hour"]);
                    (c, Some("/bin/true\n"))
                }),
            ));
            Some(atd)
        }
        Err(why) => {
            println!("at: skipped: {why}");
            None
        }
    };
    if is_installed("pueue") {
        println!(
            "pueue: installed, but not benchmarked here yet: its figures are in FACTS.md (11 ms per add on an empty queue)"
        );
    } else {
        println!(
            "pueue: skipped: not installed (FACTS.md has its figures: 11 ms per add on an empty queue, 124 ms with 10,000 stored)"
        );
    }
    // The client's own floor.
    tools.push((
        "chimectl --version",
        Box::new(|| {
            let mut c = Command::new(&chimectl);
            c.arg("--version");
            (c, None)
        }),
    ));

    let mut medians: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, (name, submit)) in tools.iter().enumerate() {
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let (command, input) = submit();
                let (took, stderr) = timed(command, input);
                if *name == "at"
                    && let Some(id) = stderr.split_whitespace().skip_while(|w| *w != "job").nth(1)
                {
                    at_jobs.push(id.to_owned());
                }
                times.push(took);
            }
            times.sort();
            let p50 = percentile(&times, 0.5);
            medians[i].push(p50);
            all[i].extend(times);
            line.push_str(&format!("  {name} p50 {p50:.2} ms"));
        }
        println!("{line}");
    }
    let chime = median(&mut medians[0].clone());
    for (i, (name, _)) in tools.iter().enumerate() {
        let mut sorted = all[i].clone();
        sorted.sort();
        let ratios: Vec<f64> = medians[0]
            .iter()
            .zip(&medians[i])
            .map(|(c, t)| c / t)
            .collect();
        println!(
            "{name:<20} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  (median of round medians {:.2} ms){}",
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
            median(&mut medians[i].clone()),
            if i == 0 {
                String::new()
            } else {
                format!(
                    "; chimectl add / {name}: {:.2}x (rounds {})",
                    median(&mut ratios.clone()),
                    ratios
                        .iter()
                        .map(|r| format!("{r:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    println!("chimectl add median of round medians: {chime:.2} ms");
    if !at_jobs.is_empty() {
        for chunk in at_jobs.chunks(500) {
            let _ = Command::new("atrm").args(chunk).status();
        }
        println!("removed the {} at jobs this bench made", at_jobs.len());
    }
    drop(atd);
}
