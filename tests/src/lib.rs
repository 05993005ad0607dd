//! Test harness: run the real `chimed` and `chimectl` in temp dirs.
//!
//! - [`bin`] finds the binaries: `$CHIMED_BIN` / `$CHIMECTL_BIN`, else the target directory this
//!   test executable lives in, after building them once with `cargo build` (cargo sets
//!   `CARGO_BIN_EXE_*` only for a package's own binaries, and these live in other packages).
//! - [`Daemon`] starts chimed with its own socket and state directory and waits for `READY=1` on
//!   a test `NOTIFY_SOCKET`, as systemd would; it kills the daemon on drop and prints its log
//!   when a test fails.
//! - [`Daemon::ctl`] runs chimectl against it; the `*_ok` variants dump the command, its output
//!   and the daemon's log when the command fails.
//! - [`TestUser`] is a real user, created for one test and removed after it; chimectl
//!   ([`TestUser::ctl`]) and chimed ([`Daemon::start_as`]) run as such a user through `setpriv`.
//! - [`pg::Cluster`] is a private PostgreSQL cluster (fleet mode's store), run as a test user.
//! - [`wait_until`] polls a condition with a deadline: tests wait for states, never for fixed
//!   times.

pub mod bench;
pub mod pg;
pub mod raw;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The path of one of the workspace's binaries (`chimed` or `chimectl`).
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test> or target/<profile>/<bench binary> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let mut dir = exe
            .parent()
            .expect("executables live in a directory")
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        // The first test binary to get here (activation.rs, first in line) builds the binaries,
        // and a busy machine makes that slow: say so, so that the time is not blamed on chimed.
        let started = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "chime-daemon",
            "-p",
            "chime-ctl",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the binaries");
        assert!(status.success(), "building chimed and chimectl failed");
        if started.elapsed() > Duration::from_secs(5) {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "building chimed and chimectl for the tests took {:?}",
                started.elapsed()
            );
        }
        dir
    });
    dir.join(name)
}

/// Writes a configuration or job file, creating its directory, with mode 0644 (chimed refuses
/// files others may write).
pub fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Write beside it and rename, as an editor or configuration management would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// How long one chimectl command of a test may take before the test fails (a hang is a failure
/// that says what hung, not a stuck test run).
pub const CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// A finished command's status, stdout and stderr, for a failure message.
pub fn shown(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end and returns its output, or panics (after killing it) when it takes longer
/// than `timeout`, naming the command and what it printed so far.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    use std::io::Read;
    let what = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("piped")));
    let stderr = reader(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {timeout:?}; it printed: {}",
                String::from_utf8_lossy(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A chimed in a temp dir.
#[derive(Debug)]
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// `--config`: `<dir>/etc/chimed.toml` (absent unless a test writes it), with `jobs.d`
    /// beside it.
    pub config: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    /// The PostgreSQL cluster holding its store, when `CHIME_TEST_STORE=postgres` (see
    /// [`store_under_test`]); dropped after the daemon.
    pub pg: Option<pg::Cluster>,
}

/// The store the integration tests' daemons use: `postgres` gives each daemon a private
/// PostgreSQL cluster (`--store`), so that the same tests hold both backends to the same
/// behaviour; `redb`, the default file. Chosen by `CHIME_TEST_STORE`, or else by the test
/// binary: `tests/tests/on_postgres.rs` runs the shared suites on PostgreSQL.
pub fn store_under_test() -> &'static str {
    static STORE: OnceLock<String> = OnceLock::new();
    STORE.get_or_init(|| match std::env::var("CHIME_TEST_STORE").as_deref() {
        Ok("postgres") => "postgres".into(),
        Ok("redb") => "redb".into(),
        Err(_) if on_postgres_binary() => "postgres".into(),
        Err(_) => "redb".into(),
        Ok(other) => panic!("CHIME_TEST_STORE={other:?}: give `redb` or `postgres`"),
    })
}

/// Whether this is the `on_postgres` test binary.
fn on_postgres_binary() -> bool {
    std::env::current_exe().ok().is_some_and(|exe| {
        exe.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("on_postgres-"))
    })
}

/// A cluster for a daemon's store, when the tests run on PostgreSQL. Without PostgreSQL's
/// server, `on_postgres` (which only makes sense with it) skips everything it has, saying so,
/// and `CHIME_TEST_STORE=postgres` (which asked for it) fails.
fn store_cluster() -> Option<pg::Cluster> {
    if store_under_test() != "postgres" {
        return None;
    }
    match pg::Cluster::start("a daemon on PostgreSQL") {
        Some(cluster) => Some(cluster),
        None if std::env::var_os("CHIME_TEST_STORE").is_none() => {
            skipped(
                "every test of on_postgres",
                "PostgreSQL's server is not installed (apt-get install postgresql)",
            );
            std::process::exit(0);
        }
        None => panic!("CHIME_TEST_STORE=postgres, but PostgreSQL's server is not installed"),
    }
}

/// A `chimed.toml` that lets schedules recur every 100 ms (the default `min_interval` is 1 s),
/// for tests that watch several occurrences of a job pass.
pub const SHORT_INTERVALS: &str = "[limits]\nmin_interval = \"100ms\"\n";

impl Daemon {
    /// Starts a daemon with default options and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a daemon with extra command-line options and waits until it is ready.
    pub fn start_with(args: &[&str]) -> Self {
        let mut daemon = Self::prepare(args);
        daemon
            .launch()
            .unwrap_or_else(|err| panic!("chimed did not start: {err}"));
        daemon
    }

    /// Starts a daemon whose `chimed.toml` is `config`, with extra command-line options, and
    /// waits until it is ready.
    pub fn start_configured(config: &str, args: &[&str]) -> Self {
        let mut daemon = Self::prepare(args);
        daemon.write_config(config);
        daemon
            .launch()
            .unwrap_or_else(|err| panic!("chimed did not start: {err}"));
        daemon
    }

    /// A daemon's directories and options, not started yet (write its configuration first,
    /// then [`Daemon::launch`]).
    pub fn prepare(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("chime-test-")
            .tempdir()
            .expect("temp dir");
        // Other users (the authorization tests) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self::unstarted(dir, args)
    }

    fn unstarted(dir: tempfile::TempDir, args: &[&str]) -> Self {
        let mut extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let pg = store_cluster();
        if let Some(cluster) = &pg {
            extra_args.push("--store".into());
            extra_args.push(cluster.url());
        }
        Self {
            pg,
            config: dir.path().join("etc/chimed.toml"),
            socket: dir.path().join("run/chimed.sock"),
            state_dir: dir.path().join("state"),
            log: dir.path().join("chimed.log"),
            extra_args,
            child: None,
            dir,
        }
    }

    /// Writes the configuration file (mode 0644).
    pub fn write_config(&self, text: &str) {
        write_file(&self.config, text);
    }

    /// Writes `jobs.d/<name>.toml` (mode 0644).
    pub fn write_job(&self, name: &str, text: &str) {
        write_file(&self.jobs_dir().join(format!("{name}.toml")), text);
    }

    /// Removes `jobs.d/<name>.toml`.
    pub fn remove_job(&self, name: &str) {
        std::fs::remove_file(self.jobs_dir().join(format!("{name}.toml"))).unwrap();
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.config.parent().unwrap().join("jobs.d")
    }

    /// The command that starts this daemon (for tests that expect it to fail).
    pub fn command(&self) -> Command {
        self.with_options(Command::new(bin("chimed")))
    }

    /// The command that starts this daemon as `user`: a copy of chimed any user may execute,
    /// run through [`TestUser::command`]. The daemon's directory becomes the user's, so that
    /// chimed may create its state and socket there.
    pub fn command_as(&self, user: &TestUser) -> Command {
        std::os::unix::fs::chown(self.dir.path(), Some(user.uid), Some(user.gid))
            .expect("give the daemon's directory to the test user");
        if let Some(cluster) = &self.pg {
            cluster.admit(user.gid);
        }
        self.with_options(user.command(public_chimed(self.dir.path())))
    }

    /// Starts a daemon as `user` (see [`Daemon::command_as`]) and waits until it is ready.
    pub fn start_as(user: &TestUser, args: &[&str]) -> Self {
        let mut daemon = Self::prepare(args);
        let cmd = daemon.command_as(user);
        daemon
            .launch_command(cmd)
            .unwrap_or_else(|err| panic!("chimed as {} did not start: {err}", user.name));
        daemon
    }

    /// `cmd` (chimed, perhaps behind a program that execs it) with this daemon's options.
    fn with_options(&self, mut cmd: Command) -> Command {
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--config")
            .arg(&self.config)
            .args(&self.extra_args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CHIME_CONFIG")
            .env_remove("CHIME_SOCKET")
            .env_remove("CHIME_STATE_DIR")
            .env("CHIME_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// The command that starts this daemon, run through `sh -c SCRIPT` which ends by exec'ing
    /// chimed (so that the pid stays chimed's): for a limit (`ulimit -n 128`) or an inherited
    /// descriptor (`exec 7<FILE`) set up first. Start it with [`Daemon::launch_command`].
    pub fn command_after(&self, script: &str) -> Command {
        let inner = self.command();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{script}; exec \"$@\""))
            .arg("sh")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Starts chimed and waits for READY=1. Errors carry its log.
    pub fn launch(&mut self) -> Result<(), String> {
        self.launch_command(self.command())
    }

    /// Starts chimed with `cmd` (built from [`Daemon::command`], perhaps wrapped in a program
    /// that ends by exec'ing it, so that the pid stays chimed's) and waits for READY=1. Errors
    /// carry its log.
    pub fn launch_command(&mut self, mut cmd: Command) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        let notify_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        // A daemon run as a test user must be able to send to it.
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn chimed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|l| l == "READY=1") {
                    break;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "chimed exited with {status} before READY=1:\n{}",
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no READY=1 within 30s:\n{}", self.log()));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the daemon dies without cleaning up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGKILL);
            child.wait().unwrap();
        }
    }

    /// How the daemon exited, if it did by itself (it is reaped then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGTERM and wait for the clean exit; returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let mut child = self.child.take().expect("daemon running");
        let started = Instant::now();
        signal(child.id(), libc::SIGTERM);
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "chimed exited with {status} on SIGTERM:\n{}",
            self.log()
        );
        started.elapsed()
    }

    /// SIGTERM, and the time chimed took to exit, which must be within `limit` (it panics, with
    /// the log, if chimed is still alive then). The exit status need not be a success.
    pub fn stop_within(&mut self, limit: Duration) -> Duration {
        let mut child = self.child.take().expect("daemon running");
        let started = Instant::now();
        signal(child.id(), libc::SIGTERM);
        loop {
            if child.try_wait().expect("wait for chimed").is_some() {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chimed did not stop within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same socket and state directory.
    pub fn restart(&mut self) {
        self.launch()
            .unwrap_or_else(|err| panic!("chimed did not restart: {err}"));
    }

    /// Runs chimectl with `args` against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        output_within(self.ctl_command(args), CTL_TIMEOUT)
    }

    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("chimectl"));
        cmd.args(args)
            .env("CHIME_SOCKET", &self.socket)
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs chimectl and returns its stdout; panics with everything on failure.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if !out.status.success() {
            panic!(
                "chimectl {args:?} failed with {}\n--- chimed log ---\n{}",
                shown(&out),
                self.log()
            );
        }
        String::from_utf8(out.stdout).expect("chimectl prints UTF-8")
    }

    /// Runs chimectl with `--json` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ctl_ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("chimectl {args:?} printed bad JSON ({e}): {text}"))
    }

    /// Submits a job and returns its id.
    pub fn add(&self, args: &[&str]) -> u64 {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        self.ctl_json(&all)["id"]
            .as_u64()
            .expect("add prints an id")
    }

    /// `show --json` of a job named by id, name or USER/NAME.
    pub fn show_ref(&self, job: &str) -> Value {
        self.ctl_json(&["show", job])
    }

    /// `show --json` of a job.
    pub fn show(&self, job: u64) -> Value {
        self.ctl_json(&["show", &job.to_string()])
    }

    /// Waits until the job is in `state` and returns its `show --json`.
    pub fn wait_state(&self, job: u64, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(timeout, &format!("job {job} to be {state}"), || {
                last = self.show(job);
                (last["state"] == state).then(|| last.clone())
            })
        }));
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "job {job} did not become {state} within {timeout:?}; last seen:\n{last:#}\n--- chimed log ---\n{}",
                self.log()
            ),
        }
    }

    /// Waits until the job has finished (succeeded, failed or cancelled).
    pub fn wait_final(&self, job: u64, timeout: Duration) -> Value {
        wait_until(timeout, &format!("job {job} to finish"), || {
            let v = self.show(job);
            matches!(
                v["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(v)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- chimed log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
        self.kill();
        self.remove_cgroups();
    }
}

impl Daemon {
    /// Ends what the daemon's runs left (its cgroup subtree, when it made its own: a root
    /// chimed started by hand, as in these tests) and removes the subtree, so that killed test
    /// daemons leave neither processes nor cgroups behind. Best effort, at most 2 s.
    fn remove_cgroups(&self) {
        let log = self.log();
        let Some(base) = log
            .split("a cgroup per run under ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(PathBuf::from)
            .filter(|b| b.parent().is_some_and(|p| p.ends_with("chime")))
        else {
            return;
        };
        let runs: Vec<PathBuf> = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|user| {
                std::fs::read_dir(user.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|run| run.path())
            .filter(|p| p.is_dir())
            .collect();
        for run in &runs {
            let _ = std::fs::write(run.join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for run in &runs {
            while std::fs::remove_dir(run).is_err() && run.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Ok(users) = std::fs::read_dir(&base) {
            for user in users.flatten() {
                let _ = std::fs::remove_dir(user.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::try_from(sig).expect("a valid signal"),
    );
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Milliseconds since the epoch of an RFC 3339 string from `--json`.
pub fn ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    text.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("bad time {text}: {e}"))
        .as_millisecond()
}

/// Says on the real stderr (which the test runner does not capture, unlike `eprintln!`) that
/// `test` checked nothing, and why. The test then returns and passes.
/// Whether the daemons keep their jobs in redb (see [`store_under_test`]); if not, says that
/// `test`, which is about the redb file itself, is skipped.
pub fn on_redb(test: &str) -> bool {
    let redb = store_under_test() == "redb";
    if !redb {
        skipped(
            test,
            "it tests the redb file, and CHIME_TEST_STORE=postgres",
        );
    }
    redb
}

pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Whether the tests run as root (needed to create users).
pub fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// A user created for one test with `useradd` and removed with `userdel` when dropped, so that
/// the tests act as real unprivileged users and leave no account behind. Needs root: check
/// [`is_root`] first (and say [`skipped`] when not).
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates `ct<pid>x<n>-<tag>` (a system account with no home and /bin/sh), unique to this
    /// test process and call. `useradd` is retried while another test holds the passwd lock.
    pub fn create(tag: &str) -> Self {
        Self::create_as(tag, None)
    }

    /// Like [`TestUser::create`], with the given uid (say, a deleted user's).
    pub fn create_with_uid(tag: &str, uid: u32) -> Self {
        Self::create_as(tag, Some(uid))
    }

    fn create_as(tag: &str, uid: Option<u32>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ct{}x{n}-{tag}", std::process::id());
        assert!(name.len() <= 32, "user name {name} is too long");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut useradd = Command::new("useradd");
            useradd.args(["--system", "--no-create-home", "--shell", "/bin/sh"]);
            if let Some(uid) = uid {
                useradd.args(["--uid", &uid.to_string()]);
            }
            let out = useradd.arg(&name).output().expect("run useradd");
            if out.status.success() {
                break;
            }
            // Exit 10: the passwd file is locked by another useradd or userdel.
            let locked = out.status.code() == Some(10)
                || String::from_utf8_lossy(&out.stderr).contains("lock");
            assert!(
                locked && Instant::now() < deadline,
                "useradd {name} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let user = nix::unistd::User::from_name(&name)
            .expect("look up the new user")
            .expect("useradd created the user");
        Self {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// `program` run as this user (uid, gid and groups), through `setpriv`, which drops before it
    /// executes the program: whatever the command's environment holds is never seen by root.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--init-groups",
            "--",
        ])
        .arg(program)
        .current_dir("/tmp")
        .stdin(Stdio::null());
        cmd
    }

    /// chimectl with `args`, as this user, against `daemon`.
    pub fn ctl(&self, daemon: &Daemon, args: &[&str]) -> Output {
        output_within(self.ctl_command(daemon, args), CTL_TIMEOUT)
    }

    pub fn ctl_command(&self, daemon: &Daemon, args: &[&str]) -> Command {
        let mut cmd = self.command(public_chimectl(daemon.dir.path()));
        cmd.args(args)
            .env("CHIME_SOCKET", &daemon.socket)
            .env("TZ", "UTC");
        cmd
    }

    /// chimectl as this user; panics with everything when it fails.
    pub fn ctl_ok(&self, daemon: &Daemon, args: &[&str]) -> String {
        let out = self.ctl(daemon, args);
        assert!(
            out.status.success(),
            "chimectl {args:?} as {} failed with {}\n--- chimed log ---\n{}",
            self.name,
            shown(&out),
            daemon.log()
        );
        String::from_utf8(out.stdout).expect("chimectl prints UTF-8")
    }

    /// `chimectl --json add ARGS` as this user; the new job's id.
    pub fn add(&self, daemon: &Daemon, args: &[&str]) -> u64 {
        let mut all = vec!["--json", "add"];
        all.extend_from_slice(args);
        let text = self.ctl_ok(daemon, &all);
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_u64())
            .unwrap_or_else(|| panic!("add printed no id: {text}"))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Whatever the user still runs goes first (userdel refuses a user with processes),
            // again on every attempt: a daemon still running may start the user's next queued
            // job as the last one is killed.
            let _ = Command::new("pkill")
                .args(["-KILL", "-U", &self.uid.to_string()])
                .status();
            let Ok(out) = Command::new("userdel").arg(&self.name).output() else {
                return;
            };
            // 6: no such user (already gone); 10: the passwd file is locked; 8: still logged in.
            if out.status.success() || out.status.code() == Some(6) || Instant::now() > deadline {
                if !out.status.success() && out.status.code() != Some(6) {
                    eprintln!(
                        "userdel {} failed: {}",
                        self.name,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A copy of chimectl that any user may execute (the target directory may be private).
pub fn public_chimectl(dir: &Path) -> PathBuf {
    public_copy(dir, "chimectl")
}

/// A copy of chimed that any user may execute (the target directory may be private).
pub fn public_chimed(dir: &Path) -> PathBuf {
    public_copy(dir, "chimed")
}

/// A copy of the binary `name` in `dir`, mode 0755.
///
/// `install` writes it, not this process: a file this process held open for writing would be
/// inherited by every child another test thread forks meanwhile, and executing the copy would
/// fail with "text file busy" until those children had exec'd.
fn public_copy(dir: &Path, name: &str) -> PathBuf {
    public_copy_of(dir, &bin(name))
}

/// A copy of the executable `path` in `dir`, mode 0755, for other users to run (see
/// `public_copy`).
pub fn public_copy_of(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().expect("a file");
    let copy = dir.join(name);
    if !copy.exists() {
        let status = Command::new("install")
            .args(["-m", "0755"])
            .arg(path)
            .arg(&copy)
            .status()
            .expect("run install");
        assert!(
            status.success(),
            "install {} into {} failed",
            path.display(),
            dir.display()
        );
    }
    copy
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), if it is.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}
