//! chimed under a real systemd: installed with systemd/install.sh into a throw-away container
//! whose PID 1 is systemd (tests/e2e/nspawn.sh), then driven through systemctl, journalctl and
//! chimectl. One boot serves the whole scenario, a few seconds in all.
//!
//! It needs root, systemd-nspawn (`apt-get install systemd-container`) and /lib/systemd/systemd;
//! elsewhere it says so and passes without checking anything. The container's root is this
//! machine's root, read-only under a memory overlay, so nothing it does reaches the host.

use chime_tests::{bin, is_root, skipped, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// chimed's default --stop-grace: a stop that takes this long had to SIGKILL a job.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<&'static str> {
    if !is_root() {
        Some("needs root to boot a container")
    } else if Command::new("systemd-nspawn")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("needs systemd-nspawn (apt-get install systemd-container)")
    } else if !Path::new("/lib/systemd/systemd").exists() {
        Some("needs systemd (/lib/systemd/systemd)")
    } else {
        None
    }
}

/// A booted container; halted, and its work directory removed, on drop.
struct Container {
    script: PathBuf,
    dir: String,
    run: Child,
}

impl Container {
    /// Boots a container that sees `binds` (host path, path inside) read-only.
    fn boot(binds: &[(PathBuf, &str)]) -> Self {
        let script = project().join("tests/e2e/nspawn.sh");
        let init = Command::new(&script)
            .arg("init")
            .output()
            .expect("run nspawn.sh");
        assert!(init.status.success(), "nspawn.sh init: {init:?}");
        let dir = String::from_utf8(init.stdout).unwrap().trim().to_owned();
        let run = Command::new(&script)
            .arg("run")
            .arg(&dir)
            .args(
                binds
                    .iter()
                    .map(|(from, to)| format!("--bind-ro={}:{to}", from.display())),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("run nspawn.sh run");
        let container = Self { script, dir, run };
        let wait = Command::new(&container.script)
            .args(["wait", &container.dir])
            .output()
            .expect("run nspawn.sh wait");
        assert!(
            wait.status.success(),
            "the container did not boot:\n{}",
            String::from_utf8_lossy(&wait.stderr)
        );
        container
    }

    /// Runs `args` inside the container.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new(&self.script)
            .args(["exec", &self.dir])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nspawn.sh exec")
    }

    /// Runs `args` inside the container and returns its stdout; panics with everything if it
    /// fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(out.status.success(), "{}", failure(args, &out));
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs a shell script inside the container and returns its stdout, or panics.
    fn sh(&self, script: &str) -> String {
        self.ok(&["sh", "-c", script])
    }

    /// `chimectl --json ARGS...` as root inside the container, parsed.
    fn chimectl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["chimectl", "--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bad JSON from {all:?} ({e}): {text}"))
    }

    /// `systemctl show -p NAME` of a unit.
    fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&["systemctl", "show", "--value", "-p", name, unit])
            .trim_end()
            .to_owned()
    }

    /// The journal's JSON records matching `matches` (journalctl arguments).
    fn journal(&self, matches: &[&str]) -> Vec<Value> {
        let mut args = vec!["journalctl", "--no-pager", "-o", "json"];
        args.extend_from_slice(matches);
        self.ok(&args)
            .lines()
            .map(|line| serde_json::from_str(line).expect("journalctl prints JSON lines"))
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for args in [
                &[
                    "systemctl",
                    "status",
                    "--no-pager",
                    "chimed.service",
                    "chimed.socket",
                ][..],
                &[
                    "journalctl",
                    "--no-pager",
                    "-b",
                    "-n",
                    "200",
                    "-o",
                    "short-precise",
                ][..],
            ] {
                let out = self.exec(args);
                eprintln!(
                    "--- {} (in the container) ---\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let halt = Command::new(&self.script)
            .args(["halt", &self.dir])
            .status();
        if !matches!(halt, Ok(status) if status.success()) {
            eprintln!("nspawn.sh halt {} failed: {halt:?}", self.dir);
        }
        let _ = self.run.wait();
    }
}

fn failure(args: &[&str], out: &Output) -> String {
    format!("{args:?} failed with {}", chime_tests::shown(out))
}

/// Prints on the real stderr, which the test runner does not capture: how long each step took
/// is worth seeing.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "systemd e2e: {text}");
}

fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    say(&format!("{name} ({} ms)", started.elapsed().as_millis()));
    value
}

#[test]
fn chimed_under_a_real_systemd() {
    if let Some(why) = cannot_run() {
        skipped("chimed_under_a_real_systemd", why);
        return;
    }
    let started = Instant::now();
    let c = step("boot", || {
        Container::boot(&[
            (project().join("systemd"), "/mnt/chime/systemd"),
            (bin("chimed"), "/mnt/chime/bin/chimed"),
            (bin("chimectl"), "/mnt/chime/bin/chimectl"),
        ])
    });
    step("install with install.sh", || install_with_install_sh(&c));
    step("systemd-analyze verify", || units_verify_cleanly(&c));
    step("start returns once ready", || start_returns_once_ready(&c));
    let echo = step("a job through the socket", || {
        a_job_runs_through_the_socket(&c)
    });
    step("journal", || journal_shows_chimeds_records(&c));
    step("reload", || reload_keeps_chimed_running(&c));
    step("reload applies jobs.d", || {
        reload_applies_a_changed_jobs_d_file(&c)
    });
    step("watchdog, healthy", || {
        watchdog_leaves_a_healthy_chimed_alone(&c)
    });
    step("watchdog, wedged", || watchdog_restarts_a_wedged_engine(&c));
    step("no delegation without Delegate=yes", || {
        no_delegation_without_delegate(&c)
    });
    step("group chime", || {
        group_chime_may_use_the_socket_and_others_may_not(&c)
    });
    let sleeper = step("stop with a running job", || {
        stop_ends_running_jobs_quickly(&c)
    });
    step("activation by a connection", || {
        a_connection_starts_the_stopped_service(&c, sleeper)
    });
    step("a user's own chimed", || a_users_own_chimed(&c));
    // Last, so that everything above is checked whatever it says.
    step("JOB_ID in the journal", || {
        journal_tells_the_job_story(&c, echo)
    });
    step("halt", || drop(c));
    say(&format!("all in {:.1} s", started.elapsed().as_secs_f64()));
}

/// Staged with --destdir, install.sh writes only under it, points ExecStart= at --prefix, and
/// never replaces a configuration that is there. Runs anywhere, root or not.
#[test]
fn install_sh_stages_everything_under_destdir() {
    let work = tempfile::tempdir().unwrap();
    // A copy of systemd/ with a configuration example (the format is chimed's; any text will do).
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let copied = Command::new("cp")
        .arg("-R")
        .arg(project().join("systemd"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(copied.success());
    let example = src.join("systemd/chimed.toml.example");
    std::fs::write(&example, "# example\n").unwrap();
    let bins = work.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    for name in ["chimed", "chimectl"] {
        std::os::unix::fs::symlink(bin(name), bins.join(name)).unwrap();
    }
    let stage = work.path().join("stage");
    let install = || {
        let out = Command::new(src.join("systemd/install.sh"))
            .args(["--prefix", "/opt/chime", "--bin-dir"])
            .arg(&bins)
            .arg("--destdir")
            .arg(&stage)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", failure(&["install.sh"], &out));
    };
    install();

    let mut files: Vec<String> = walk(&stage)
        .iter()
        .map(|p| p.strip_prefix(&stage).unwrap().display().to_string())
        .collect();
    files.sort();
    // The manual pages: chimed's, chimectl's, and one per subcommand of chimectl.
    let (man1, others): (Vec<String>, Vec<String>) = files
        .iter()
        .cloned()
        .partition(|f| f.starts_with("opt/chime/share/man/man1/"));
    assert!(
        man1.contains(&"opt/chime/share/man/man1/chimectl.1".to_owned())
            && man1.contains(&"opt/chime/share/man/man1/chimectl-add.1".to_owned())
            && man1.contains(&"opt/chime/share/man/man1/chimectl-queue-set.1".to_owned()),
        "{man1:?}"
    );
    let files = others;
    assert_eq!(
        files,
        [
            "etc/chime/chimed.toml",
            "etc/pam.d/chime",
            "etc/systemd/system/chimed.service",
            "etc/systemd/system/chimed.socket",
            "etc/systemd/user/chimed.service",
            "etc/systemd/user/chimed.socket",
            "etc/sysusers.d/chime.conf",
            "opt/chime/bin/chimectl",
            "opt/chime/bin/chimed",
            "opt/chime/share/bash-completion/completions/chimectl",
            "opt/chime/share/fish/vendor_completions.d/chimectl.fish",
            "opt/chime/share/man/man8/chimed.8",
            "opt/chime/share/zsh/site-functions/_chimectl",
        ]
    );
    // Stripped: smaller than the build's own binaries, which keep their debug information.
    for name in ["chimed", "chimectl"] {
        let installed = std::fs::metadata(stage.join("opt/chime/bin").join(name))
            .unwrap()
            .len();
        let built = std::fs::metadata(bin(name)).unwrap().len();
        assert!(
            installed < built / 2,
            "{name}: {installed} bytes installed, {built} built: not stripped"
        );
    }
    for unit in ["system", "user"] {
        let text =
            std::fs::read_to_string(stage.join(format!("etc/systemd/{unit}/chimed.service")))
                .unwrap();
        assert!(
            text.lines()
                .filter(|l| l.starts_with("ExecStart="))
                .all(|l| l.starts_with("ExecStart=/opt/chime/bin/chimed")),
            "{unit} unit:\n{text}"
        );
    }
    // Again, over an edited configuration: the same files, the configuration kept.
    let config = stage.join("etc/chime/chimed.toml");
    std::fs::write(&config, "# mine\n").unwrap();
    install();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert_eq!(walk(&stage).len(), files.len() + man1.len());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `systemd-analyze verify` of the units as shipped, with ExecStart= and ExecReload= pointing at
/// this build's binaries, where no container can boot (and so as a quick check everywhere).
#[test]
fn units_verify_cleanly_offline() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        skipped("units_verify_cleanly_offline", "needs systemd-analyze");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let chimed = bin("chimed");
    let chimectl = bin("chimectl");
    let manpath = work.path().join("man");
    std::fs::create_dir_all(manpath.join("man8")).unwrap();
    let page = Command::new(&chimed).arg("--man").output().unwrap();
    assert!(
        page.status.success(),
        "{}",
        failure(&["chimed", "--man"], &page)
    );
    std::fs::write(manpath.join("man8/chimed.8"), &page.stdout).unwrap();
    let pages = Command::new(&chimectl)
        .arg("man")
        .arg(manpath.join("man1"))
        .output()
        .unwrap();
    assert!(
        pages.status.success(),
        "{}",
        failure(&["chimectl", "man"], &pages)
    );
    for (kind, dir) in [("system", "systemd"), ("user", "systemd/user")] {
        let units = work.path().join(kind);
        std::fs::create_dir(&units).unwrap();
        let mut paths = Vec::new();
        for name in ["chimed.service", "chimed.socket"] {
            let text = std::fs::read_to_string(project().join(dir).join(name)).unwrap();
            let text = text
                .replace("/usr/local/bin/chimectl", chimectl.to_str().unwrap())
                .replace("/usr/local/bin/chimed", chimed.to_str().unwrap());
            std::fs::write(units.join(name), text).unwrap();
            paths.push(units.join(name));
        }
        let mut verify = Command::new("systemd-analyze");
        // Documentation=man:chimed(8) man:chimectl(1): verify runs man for each; the pages are
        // made here as install.sh makes them.
        verify.env("MANPATH", &manpath);
        if kind == "user" {
            // A user manager needs a runtime directory, even to verify.
            let runtime = work.path().join("runtime");
            std::fs::create_dir_all(&runtime).unwrap();
            verify.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        let out = verify.arg("verify").args(&paths).output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            failure(&["systemd-analyze", "verify", kind], &out)
        );
    }
}

/// install.sh with the binaries this test run built; twice, since it must be idempotent.
fn install_with_install_sh(c: &Container) {
    for _ in 0..2 {
        c.ok(&[
            "/mnt/chime/systemd/install.sh",
            "--bin-dir",
            "/mnt/chime/bin",
        ]);
    }
    c.ok(&["getent", "group", "chime"]);
    assert!(
        c.ok(&["/usr/local/bin/chimed", "--version"])
            .starts_with("chimed ")
    );
    for unit in ["chimed.service", "chimed.socket"] {
        assert_eq!(c.property(unit, "LoadState"), "loaded", "{unit}");
    }
}

/// `systemd-analyze verify` exits 0 even for unknown keys and bad values, with a warning: any
/// output at all is a failure.
fn units_verify_cleanly(c: &Container) {
    let system = [
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/chimed.service",
        "/etc/systemd/system/chimed.socket",
    ];
    // A user manager needs a runtime directory, even to verify.
    let user = [
        "sh",
        "-c",
        "XDG_RUNTIME_DIR=$(mktemp -d) exec systemd-analyze --user verify \
         /etc/systemd/user/chimed.service /etc/systemd/user/chimed.socket",
    ];
    for args in [&system[..], &user[..]] {
        let out = c.exec(args);
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            failure(args, &out)
        );
    }
}

/// Type=notify: `systemctl start` returns once chimed said READY=1, so it serves at once.
fn start_returns_once_ready(c: &Container) {
    c.ok(&["systemctl", "start", "chimed.service"]);
    let unit = "chimed.service";
    assert_eq!(c.property(unit, "ActiveState"), "active");
    assert_eq!(c.property(unit, "SubState"), "running");
    assert!(
        !c.property(unit, "StatusText").is_empty(),
        "STATUS= came with READY=1"
    );
    let status = c.chimectl_json(&["status"]);
    assert_eq!(status["pid"].to_string(), c.property(unit, "MainPID"));
    assert_eq!(status["socket"], "/run/chime/chimed.sock");
    assert_eq!(status["state_dir"], "/var/lib/chime");
    // install.sh gave it the PAM service chime, and the account checks use it.
    let checks = status["account_check"].as_str().unwrap_or_default();
    assert!(checks.contains("PAM service chime"), "{checks}");
    // Delegate=yes: chimed took up its service's cgroup for its runs, from a leaf of its own.
    let containment = &status["containment"];
    assert_eq!(containment["mode"], "delegated", "{containment}");
    assert!(
        containment["cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with("/system.slice/chimed.service")),
        "{containment}"
    );
    let own = c.ok(&["cat", &format!("/proc/{}/cgroup", status["pid"])]);
    assert!(
        own.lines()
            .any(|l| l == "0::/system.slice/chimed.service/chimed"),
        "chimed is not in its leaf: {own}"
    );
    // The socket is chimed.socket's (mode and group from the unit), not one chimed bound: that
    // would have left its lock beside it.
    assert_eq!(
        c.ok(&["stat", "-c", "%F %a %U:%G", "/run/chime/chimed.sock"]),
        "socket 660 root:chime\n"
    );
    assert!(
        !c.exec(&["test", "-e", "/run/chime/chimed.sock.lock"])
            .status
            .success()
    );
    assert_eq!(c.property(unit, "WatchdogUSec"), "30s");
}

/// Returns the job's id.
fn a_job_runs_through_the_socket(c: &Container) -> u64 {
    let waited = c.chimectl_json(&["add", "--wait", "--", "/bin/echo", "hi"]);
    assert_eq!(waited["state"], "succeeded", "{waited:#}");
    let id = waited["id"].as_u64().expect("an id");
    assert_eq!(c.ok(&["chimectl", "logs", &id.to_string()]), "hi\n");
    id
}

/// chimed found the journal on its own (stderr is the journal stream) and logs there natively,
/// with its fields unprefixed.
fn journal_shows_chimeds_records(c: &Container) {
    let ready = wait_until(T, "chimed's ready record in the journal", || {
        c.journal(&["-u", "chimed.service", "MESSAGE=chimed ready"])
            .pop()
    });
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "chimed", "{ready:#}");
    assert_eq!(ready["_TRANSPORT"], "journal", "native protocol: {ready:#}");
    assert_eq!(ready["SOCKET_ACTIVATED"], "true", "{ready:#}");
    assert_eq!(ready["STATE_DIR"], "/var/lib/chime", "{ready:#}");
    assert_eq!(ready["SOCKET"], "/run/chime/chimed.sock", "{ready:#}");
}

/// `systemctl reload` signals chimed (SIGHUP) and leaves it running.
fn reload_keeps_chimed_running(c: &Container) {
    let pid = c.property("chimed.service", "MainPID");
    c.ok(&["systemctl", "reload", "chimed.service"]);
    c.chimectl_json(&["status"]);
    assert_eq!(c.property("chimed.service", "MainPID"), pid);
    assert_eq!(c.property("chimed.service", "ActiveState"), "active");
}

/// The socket is 0660 root:chime: a member of chime submits jobs, which run as that member
/// (so the unit leaves chimed able to switch users); anyone else is turned away by the kernel.
fn group_chime_may_use_the_socket_and_others_may_not(c: &Container) {
    c.ok(&["useradd", "--groups", "chime", "chime-ann"]);
    c.ok(&["useradd", "chime-bob"]);
    let as_user = |user: &str, args: &[&str]| {
        let reuid = format!("--reuid={user}");
        let regid = format!("--regid={user}");
        // No --socket: a user who runs no chimed of their own gets the system one.
        let mut all = vec!["setpriv", &reuid, &regid, "--init-groups", "chimectl"];
        all.extend_from_slice(args);
        c.exec(&all)
    };
    let out = as_user(
        "chime-ann",
        &["--json", "add", "--wait", "--", "/usr/bin/id", "-un"],
    );
    assert!(out.status.success(), "{}", failure(&["ann: add"], &out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].to_string();
    let out = as_user("chime-ann", &["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "chime-ann\n",
        "{out:?}"
    );

    let out = as_user("chime-bob", &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Permission denied"),
        "bob, not in group chime, got in: {out:?}"
    );
    // Told how to get access, and chimectl says chimed was not reachable (69), not refused.
    assert!(
        stderr.contains("usermod -aG chime chime-bob") && stderr.contains("systemctl --user"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
}

/// `systemctl stop` with a job running: chimed ends it (SIGTERM to its process group) and
/// records it; the stop takes about as long as the job takes to die, far less than the unit's
/// TimeoutStopSec (30 s) and less than chimed's stop grace. Returns the job's id.
fn stop_ends_running_jobs_quickly(c: &Container) -> u64 {
    let id = c.chimectl_json(&["add", "--", "/bin/sleep", "300"])["id"]
        .as_u64()
        .expect("an id");
    wait_until(T, "the sleep job to run", || {
        let job = c.chimectl_json(&["show", &id.to_string()]);
        (job["state"] == "running" && job["runs"][0]["pid"].is_u64()).then_some(())
    });
    let started = Instant::now();
    c.ok(&["systemctl", "stop", "chimed.service"]);
    let took = started.elapsed();
    say(&format!("systemctl stop took {} ms", took.as_millis()));
    assert!(took < STOP_GRACE, "systemctl stop took {took:?}");
    assert_eq!(c.property("chimed.service", "ActiveState"), "inactive");
    assert_eq!(c.property("chimed.service", "Result"), "success");
    assert_eq!(c.property("chimed.socket", "ActiveState"), "active");
    c.ok(&["test", "-S", "/run/chime/chimed.sock"]);
    assert!(
        !c.exec(&["pgrep", "-x", "sleep"]).status.success(),
        "the job outlived the stop"
    );
    id
}

/// chimed.socket listens while the service is stopped; the next client starts chimed, which
/// recorded the interrupted run before it stopped.
fn a_connection_starts_the_stopped_service(c: &Container, job: u64) {
    assert_eq!(c.property("chimed.service", "ActiveState"), "inactive");
    let shown = c.chimectl_json(&["show", &job.to_string()]);
    assert_eq!(c.property("chimed.service", "ActiveState"), "active");
    let runs = shown["runs"].as_array().expect("runs");
    assert_eq!(runs[0]["outcome"], "interrupted", "{shown:#}");
}

/// The user units: `systemctl --user start chimed` in a user's own service manager gives that
/// user a chimed on the socket and state directory chimectl and chimed use by default as that
/// user, which runs the user's jobs as the user.
fn a_users_own_chimed(c: &Container) {
    c.ok(&["useradd", "--create-home", "chime-cat"]);
    let uid = c.ok(&["id", "-u", "chime-cat"]).trim().to_owned();
    let manager = format!("user@{uid}.service");
    c.ok(&["systemctl", "start", &manager]);
    let as_cat = |script: &str| {
        let runtime = format!("XDG_RUNTIME_DIR=/run/user/{uid}");
        c.ok(&[
            "setpriv",
            "--reuid=chime-cat",
            "--regid=chime-cat",
            "--init-groups",
            "env",
            "-i",
            "HOME=/home/chime-cat",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            &runtime,
            "sh",
            "-c",
            &format!("cd && {script}"),
        ])
    };
    as_cat("systemctl --user start chimed.service");
    let status: Value = serde_json::from_str(&as_cat("chimectl --json status")).unwrap();
    assert_eq!(
        status["socket"],
        format!("/run/user/{uid}/chime/chimed.sock")
    );
    assert_eq!(status["state_dir"], "/home/chime-cat/.local/state/chime");
    // The user manager delegated the unit's cgroup too.
    assert_eq!(
        status["containment"]["mode"], "delegated",
        "{}",
        status["containment"]
    );
    let ran = as_cat("chimectl add --wait -- /usr/bin/id -un >/dev/null && chimectl logs 1");
    assert_eq!(ran, "chime-cat\n");
    assert_eq!(
        as_cat("systemctl --user show --value -p SubState chimed.service"),
        "running\n"
    );
    // Stopping the manager stops the user's chimed, so the container halts without waiting.
    c.ok(&["systemctl", "stop", &manager]);
}

/// `journalctl -u chimed JOB_ID=N` tells job N's story: its run's start and end records, with
/// JOB_ID, RUN_ID, QUEUE, STATE and EXIT_CODE as journal fields.
fn journal_tells_the_job_story(c: &Container, job: u64) {
    let id = job.to_string();
    let matches = [
        "-u".to_string(),
        "chimed.service".into(),
        format!("JOB_ID={id}"),
    ];
    let matches: Vec<&str> = matches.iter().map(String::as_str).collect();
    let records = c.journal(&matches);
    for record in &records {
        assert_eq!(record["JOB_ID"], id.as_str(), "{record:#}");
    }
    let message = |text: &str| {
        records
            .iter()
            .find(|r| r["MESSAGE"] == text)
            .unwrap_or_else(|| panic!("no {text:?} record with JOB_ID={id}: {records:#?}"))
    };
    let started = message("run started");
    let ended = message("run ended");
    assert_eq!(started["QUEUE"], "default", "{started:#}");
    assert_eq!(started["STATE"], "running", "{started:#}");
    assert_eq!(started["RUN_ID"], ended["RUN_ID"], "one run: {records:#?}");
    assert_eq!(ended["EXIT_CODE"], "0", "{ended:#}");
    assert_eq!(ended["STATE"], "exited", "{ended:#}");
}

/// `systemctl reload` makes chimed re-read /etc/chime/jobs.d (ExecReload= is `chimectl reload`,
/// so it returns once the reload is applied): a changed file changes its job in place; a file
/// that does not parse fails the reload, keeps its job as it was, and chimed keeps running.
fn reload_applies_a_changed_jobs_d_file(c: &Container) {
    let write = |line: &str| {
        c.sh(&format!(
            "mkdir -p /etc/chime/jobs.d && printf '%s\\n' \\
             '{line}' 'cron = \"0 0 1 1 *\"' > /etc/chime/jobs.d/e2e.toml"
        ));
    };
    let command_of = |job: &Value| job["command"]["argv"][1].as_str().map(str::to_owned);
    write(r#"command = ["/bin/echo", "one"]"#);
    c.ok(&["systemctl", "reload", "chimed.service"]);
    let before = c.chimectl_json(&["show", "e2e"]);
    assert_eq!(command_of(&before).as_deref(), Some("one"), "{before:#}");
    assert_eq!(before["source"], "/etc/chime/jobs.d/e2e.toml");
    let pid = c.property("chimed.service", "MainPID");
    write(r#"command = ["/bin/echo", "two"]"#);
    c.ok(&["systemctl", "reload", "chimed.service"]);
    let after = c.chimectl_json(&["show", "e2e"]);
    assert_eq!(command_of(&after).as_deref(), Some("two"), "{after:#}");
    assert_eq!(after["id"], before["id"], "the same job, changed in place");
    // A file that does not parse: the reload fails and says where; nothing else changes.
    write(r#"command = "/bin/echo three""#);
    let out = c.exec(&["systemctl", "reload", "chimed.service"]);
    assert!(!out.status.success(), "a bad file fails the reload");
    let log = c.journal(&["-u", "chimed.service", "--grep", "e2e.toml:1: command"]);
    assert!(!log.is_empty(), "chimed logged the file, line and field");
    let kept = c.chimectl_json(&["show", "e2e"]);
    assert_eq!(command_of(&kept).as_deref(), Some("two"), "{kept:#}");
    assert_eq!(c.property("chimed.service", "ActiveState"), "active");
    assert_eq!(
        c.property("chimed.service", "MainPID"),
        pid,
        "a reload is no restart"
    );
    c.ok(&["rm", "/etc/chime/jobs.d/e2e.toml"]);
    c.ok(&["systemctl", "reload", "chimed.service"]);
    let gone = c.exec(&["chimectl", "show", "e2e"]);
    assert!(!gone.status.success(), "removing the file removes its job");
}

/// With a short WatchdogSec, a healthy chimed (whose engine loop pings) is left alone. Waiting is
/// the point here: three watchdog periods without a restart.
fn watchdog_leaves_a_healthy_chimed_alone(c: &Container) {
    override_service(c, "WatchdogSec=1s\n");
    let pid = c.property("chimed.service", "MainPID");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.property("chimed.service", "MainPID"), pid);
    assert_eq!(c.property("chimed.service", "NRestarts"), "0");
    c.chimectl_json(&["status"]);
    override_service(c, "");
}

/// A chimed whose engine is wedged stops pinging: systemd kills it (SIGABRT) and restarts it
/// (Restart=on-failure). `chimed --test-wedge` hangs its engine on SIGUSR2.
fn watchdog_restarts_a_wedged_engine(c: &Container) {
    override_service(
        c,
        "WatchdogSec=1s\nExecStart=\nExecStart=/usr/local/bin/chimed --test-wedge\n",
    );
    let pid = c.property("chimed.service", "MainPID");
    let restarts: u32 = c.property("chimed.service", "NRestarts").parse().unwrap();
    c.ok(&["kill", "-USR2", &pid]);
    wait_until(T, "systemd to restart the wedged chimed", || {
        let now = c.property("chimed.service", "MainPID");
        (now != pid && now != "0" && c.property("chimed.service", "SubState") == "running")
            .then_some(())
    });
    assert_eq!(
        c.property("chimed.service", "NRestarts"),
        (restarts + 1).to_string()
    );
    let timeouts = c.journal(&["-u", "chimed.service", "--grep", "[Ww]atchdog timeout"]);
    assert!(!timeouts.is_empty(), "systemd logged no watchdog timeout");
    c.chimectl_json(&["status"]);
    override_service(c, "");
}

/// A runtime drop-in for chimed.service with `settings` under [Service] (none: removed), then a
/// restart under it.
/// With `Delegate=no`, root's chimed does not take up its service's cgroup (systemd's own):
/// it makes a subtree of its own, as when started by hand, and says so in `status`.
fn no_delegation_without_delegate(c: &Container) {
    override_service(c, "Delegate=no\n");
    let status = c.chimectl_json(&["status"]);
    let containment = &status["containment"];
    assert_eq!(containment["mode"], "own", "{containment}");
    let own = c.ok(&["cat", &format!("/proc/{}/cgroup", status["pid"])]);
    assert!(
        own.lines().any(|l| l == "0::/system.slice/chimed.service"),
        "chimed moved itself out of the cgroup systemd gave it: {own}"
    );
    override_service(c, "");
    assert_eq!(
        c.chimectl_json(&["status"])["containment"]["mode"],
        "delegated"
    );
}

fn override_service(c: &Container, settings: &str) {
    let dir = "/run/systemd/system/chimed.service.d";
    if settings.is_empty() {
        c.ok(&["rm", "-rf", dir]);
    } else {
        c.sh(&format!(
            "mkdir -p {dir} && printf '[Service]\\n{settings}' > {dir}/e2e.conf"
        ));
    }
    c.ok(&["systemctl", "daemon-reload"]);
    c.ok(&["systemctl", "restart", "chimed.service"]);
}
