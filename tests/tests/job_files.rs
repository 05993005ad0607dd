//! Issue 9, item 2: job files and their directories decide what runs as whom, so chimed reads
//! them only where nobody but root (or chimed's user) could have changed them, and reads exactly
//! what it checked: no symbolic link (not even one swapped in between a check and a read), no
//! FIFO (which would hang a read), no directory others may write, on the way down from `/`.
//! chimed at start and on reload, and `chimectl config check`, say the same.
//!
//! Each test is the attack, and fails on a chimed that lets it through. Tests that need a second
//! user create one and need root: elsewhere they say SKIPPED and check nothing.

use chime_tests::{Daemon, TestUser, bin, is_root, skipped, wait_until, write_file};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// How many reloads race a file being swapped.
const RELOADS: usize = 200;

const HARMLESS: &str = "command = [\"/bin/true\"]\nevery = \"1h\"\n";

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    skipped(
        test,
        "needs root to create users (run the suite as root to check it)",
    );
    true
}

/// Runs `cmd` with its output captured; panics when it has not ended within [`T`] (a chimed
/// stuck reading a file never answers).
fn bounded(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chimectl");
    wait_until(T, what, || child.try_wait().expect("wait for chimectl"));
    child.wait_with_output().expect("collect chimectl's output")
}

/// `chimectl --json reload`: whether it succeeded, and its report.
fn reload(d: &Daemon) -> (bool, Value) {
    let out = bounded(
        d.ctl_command(&["--json", "reload"]),
        "chimectl reload to return",
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reload printed bad JSON ({e}): {out:?}"));
    (out.status.success(), report)
}

/// `chimectl config check PATH`: whether it passed, and its stderr.
fn check(path: &Path) -> (bool, String) {
    let mut cmd = Command::new(bin("chimectl"));
    cmd.args(["config", "check"]).arg(path).env("TZ", "UTC");
    let out = bounded(cmd, "chimectl config check to return");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strings(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {report:#}"))
        .iter()
        .map(|v| v.as_str().expect("strings").to_owned())
        .collect()
}

/// Counts the report's errors other than `expected` in `counts`.
fn tally(counts: &mut BTreeMap<String, usize>, report: &Value, expected: &str) {
    for error in strings(report, "errors") {
        if error != expected {
            *counts.entry(error).or_default() += 1;
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

fn is_known(d: &Daemon, name: &str) -> bool {
    d.ctl(&["show", name]).status.success()
}

fn symlink_refused(path: &Path) -> String {
    format!(
        "{}:0: is a symbolic link; chimed reads job files only as regular files (copy the file here instead)",
        path.display()
    )
}

fn fifo_refused(path: &Path) -> String {
    format!(
        "{}:0: is a FIFO (named pipe); chimed reads job files only as regular files (remove it, or put a regular file in its place)",
        path.display()
    )
}

/// A thread that keeps replacing `target` (by rename, as an editor would) with one and then the
/// other of two entries that `make` creates at a temporary name; stopped and joined on drop.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(target: PathBuf, make: impl Fn(bool, &Path) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
            // A hidden name without .toml: chimed never reads it.
            let tmp = target.with_file_name(".swapping");
            std::thread::spawn(move || {
                let mut second = false;
                while !stop.load(Ordering::Relaxed) {
                    make(second, &tmp);
                    std::fs::rename(&tmp, &target).expect("rename over the job file");
                    swaps.fetch_add(1, Ordering::Relaxed);
                    second = !second;
                }
            })
        };
        let swapper = Self {
            stop,
            swaps,
            thread: Some(thread),
        };
        // Both kinds have been in place before the first reload.
        wait_until(T, "the swapping thread to swap", || {
            (swapper.swaps.load(Ordering::Relaxed) >= 2).then_some(())
        });
        swapper
    }

    /// Stops the thread; panics if it failed.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the swapping thread failed");
        }
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A job file that is a symbolic link is refused, whether it points at another user's file or
/// at one of root's: a link's target can change between the check and the read. Before the fix,
/// chimed followed the link (and accepted it when the target was root's).
#[test]
fn a_job_file_that_is_a_symbolic_link_is_refused() {
    let test = "a_job_file_that_is_a_symbolic_link_is_refused";
    if skip_unless_root(test) {
        return;
    }
    let mut d = Daemon::prepare(&[]);
    d.write_config("max_running = 4\n");
    d.write_job("ok", HARMLESS);
    d.launch().unwrap();
    let mallory = TestUser::create("link");
    let marker = d.dir.path().join("marker");
    let theirs = d.dir.path().join("theirs.toml");
    write_file(
        &theirs,
        &format!(
            "command = [\"/bin/touch\", \"{}\"]\nevery = \"1h\"\n",
            marker.display()
        ),
    );
    chown(&theirs, mallory.uid);
    let roots = d.dir.path().join("roots.toml");
    write_file(&roots, HARMLESS);
    let jobs = d.jobs_dir();
    std::os::unix::fs::symlink(&theirs, jobs.join("x.toml")).unwrap();
    std::os::unix::fs::symlink(&roots, jobs.join("y.toml")).unwrap();
    let expected = [
        symlink_refused(&jobs.join("x.toml")),
        symlink_refused(&jobs.join("y.toml")),
    ];

    let (ok, report) = reload(&d);
    assert!(!ok, "{report:#}");
    assert_eq!(strings(&report, "errors"), expected, "{report:#}");
    assert!(strings(&report, "added").is_empty(), "{report:#}");
    assert!(!is_known(&d, "x") && !is_known(&d, "y"));
    assert!(is_known(&d, "ok"));

    // chimectl config check says the same, of the configuration and of the directory.
    for path in [&d.config, &jobs] {
        let (passed, stderr) = check(path);
        assert!(!passed, "{stderr}");
        for message in &expected {
            assert!(stderr.contains(message.as_str()), "{stderr}");
        }
    }
    // And so does chimed at start, which refuses to start on them.
    d.stop();
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&format!(
            "chimed: 2 problem(s) with the job files; fix them (or move the files out of {}) and start again:\n  {}\n  {}",
            jobs.display(),
            expected[0],
            expected[1]
        )),
        "{err}"
    );
    assert!(!marker.exists(), "the linked file's command ran");
}

/// A `jobs.d` that a group or other users may write (even sticky) is refused as a whole, with
/// one message naming it and the remedy; the jobs its files declared before stay as they were,
/// and a file added meanwhile is not read. Before the fix, chimed read it anyway.
#[test]
fn a_job_directory_others_may_write_is_refused() {
    let mut d = Daemon::prepare(&[]);
    d.write_job("kept", HARMLESS);
    d.launch().unwrap();
    let jobs = d.jobs_dir();
    let uid = nix::unistd::getuid().as_raw();
    for mode in [0o775, 0o757, 0o1777] {
        chmod(&jobs, mode);
        d.write_job("late", HARMLESS);
        let expected = format!(
            "{0}:0: directory writable by group or others (owner uid {uid}, mode {mode:04o}): anyone who can write it decides what runs as whom, so chimed reads no file beneath it; run `chmod go-w {0}`",
            jobs.display()
        );
        let (ok, report) = reload(&d);
        assert!(!ok, "mode {mode:o}: {report:#}");
        assert_eq!(
            strings(&report, "errors"),
            std::slice::from_ref(&expected),
            "{report:#}"
        );
        assert!(strings(&report, "added").is_empty(), "{report:#}");
        assert!(strings(&report, "removed").is_empty(), "{report:#}");
        assert!(is_known(&d, "kept"), "the directory's jobs are kept");
        assert!(
            !is_known(&d, "late"),
            "mode {mode:o}: a file in it was read"
        );
        let (passed, stderr) = check(&jobs);
        assert!(!passed && stderr.contains(&expected), "{stderr}");
    }
    chmod(&jobs, 0o755);
    let (ok, report) = reload(&d);
    assert!(ok, "{report:#}");
    assert_eq!(strings(&report, "added"), ["late"]);
}

/// A directory above `jobs.d` that an unprivileged user owns is refused, whether it is the
/// configuration's own directory or one further up: its owner could rename `jobs.d` and put
/// another in its place. A sticky directory writable by all (like /tmp) is fine above, as long
/// as what is below it is root's. Before the fix, chimed never looked at the directories.
#[test]
fn a_job_directory_below_a_directory_of_another_user_is_refused() {
    let test = "a_job_directory_below_a_directory_of_another_user_is_refused";
    if skip_unless_root(test) {
        return;
    }
    let mut d = Daemon::prepare(&[]);
    d.write_config("max_running = 4\n");
    d.write_job("j", HARMLESS);
    let etc = d.config.parent().unwrap().to_path_buf();
    let top = std::fs::canonicalize(d.dir.path()).unwrap();
    chmod(&etc, 0o755);
    let eve = TestUser::create("dir");
    let owned = |dir: &Path| {
        format!(
            "{0}:0: directory owned by uid {1} (mode 0755): its owner decides what runs as whom, so chimed reads no file beneath it; run `chown root {0}`",
            dir.display(),
            eve.uid
        )
    };

    // The configuration's directory.
    chown(&etc, eve.uid);
    let err = d.launch().unwrap_err();
    assert!(err.contains(&owned(&etc)), "{err}");
    let (passed, stderr) = check(&d.config);
    assert!(!passed && stderr.contains(&owned(&etc)), "{stderr}");
    // A directory further up.
    chown(&etc, 0);
    chown(&top, eve.uid);
    let err = d.launch().unwrap_err();
    assert!(err.contains(&owned(&top)), "{err}");
    let (passed, stderr) = check(&d.jobs_dir());
    assert!(!passed && stderr.contains(&owned(&top)), "{stderr}");
    // Sticky and writable by all, above root's directories: fine. Without the sticky bit: not.
    chown(&top, 0);
    chmod(&top, 0o777);
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&format!(
            "{}:0: directory writable by group or others (owner uid 0, mode 0777)",
            top.display()
        )),
        "{err}"
    );
    chmod(&top, 0o1777);
    d.launch().unwrap();
    assert!(is_known(&d, "j"));

    // On a reload: refused, and nothing changes.
    chown(&etc, eve.uid);
    d.write_job("new", HARMLESS);
    let (ok, report) = reload(&d);
    assert!(!ok, "{report:#}");
    let errors = strings(&report, "errors");
    assert!(
        errors.len() == 1 && errors[0].starts_with(&owned(&etc)),
        "{report:#}"
    );
    assert!(!is_known(&d, "new"));
    assert!(is_known(&d, "j"));
    chown(&etc, 0);
    chmod(&top, 0o755);
}

/// The check-then-read race: a thread keeps swapping `jobs.d/evil.toml` between root's
/// harmless file and a symbolic link to another user's file whose command would run as root,
/// while chimed reloads again and again. chimed must never apply the linked file's content.
/// Before the fix, it checked the path (a regular file, root's) and then opened the path again,
/// by then the link, and read the user's command.
#[test]
fn a_job_file_swapped_for_a_link_during_reloads_is_never_read_through_it() {
    let test = "a_job_file_swapped_for_a_link_during_reloads_is_never_read_through_it";
    if skip_unless_root(test) {
        return;
    }
    let mut d = Daemon::prepare(&[]);
    d.write_job("evil", HARMLESS);
    let harmless = d.dir.path().join("harmless.toml");
    write_file(&harmless, HARMLESS);
    let mallory = TestUser::create("swap");
    let marker = d.dir.path().join("marker");
    let theirs = d.dir.path().join("theirs.toml");
    write_file(
        &theirs,
        &format!(
            "command = [\"/bin/touch\", \"{}\"]\nevery = \"1h\"\n",
            marker.display()
        ),
    );
    chown(&theirs, mallory.uid);
    d.launch().unwrap();
    let evil = d.jobs_dir().join("evil.toml");

    let swapper = Swapper::start(evil.clone(), move |link, tmp| {
        if link {
            std::os::unix::fs::symlink(&theirs, tmp).expect("make the link");
        } else {
            std::fs::hard_link(&harmless, tmp).expect("link root's file");
        }
    });
    let mut applied = Vec::new();
    let mut other_errors = BTreeMap::new();
    for i in 0..RELOADS {
        let (_, report) = reload(&d);
        if strings(&report, "updated").iter().any(|n| n == "evil") {
            applied.push(i);
        }
        tally(&mut other_errors, &report, &symlink_refused(&evil));
    }
    let swaps = swapper.finish();
    assert!(
        applied.is_empty(),
        "the linked file's content was applied at reloads {applied:?} of {RELOADS} ({swaps} swaps)"
    );
    assert!(
        other_errors.is_empty(),
        "refusals other than the link's (and how many times): {other_errors:#?}"
    );
    let job = d.ctl_json(&["show", "evil"]);
    assert_eq!(job["command"]["argv"], serde_json::json!(["/bin/true"]));
    assert!(!marker.exists(), "the linked file's command ran");
}

/// A FIFO in `jobs.d` is refused without waiting for a writer, also when it is swapped in
/// between a check and a read. Before the fix, the check saw a regular file and the read opened
/// the FIFO, and waited for a writer forever: reloads never returned.
#[test]
fn a_fifo_in_the_job_directory_does_not_hang_chimed() {
    let mut d = Daemon::prepare(&[]);
    d.write_job("ok", HARMLESS);
    let harmless = d.dir.path().join("harmless.toml");
    write_file(&harmless, HARMLESS);
    d.launch().unwrap();
    let pipe = d.jobs_dir().join("pipe.toml");
    let make_fifo = |path: &Path| {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("make a FIFO");
    };

    let swapper = Swapper::start(pipe.clone(), move |fifo, tmp| {
        if fifo {
            make_fifo(tmp);
        } else {
            std::fs::hard_link(&harmless, tmp).expect("link root's file");
        }
    });
    let mut other_errors = BTreeMap::new();
    for _ in 0..RELOADS {
        let (_, report) = reload(&d);
        tally(&mut other_errors, &report, &fifo_refused(&pipe));
    }
    swapper.finish();
    assert!(
        other_errors.is_empty(),
        "refusals other than the FIFO's (and how many times): {other_errors:#?}"
    );

    // A FIFO that stays: refused by a reload and by config check, which both return.
    let tmp = pipe.with_file_name(".fifo");
    make_fifo(&tmp);
    std::fs::rename(&tmp, &pipe).unwrap();
    let (ok, report) = reload(&d);
    assert!(!ok, "{report:#}");
    assert_eq!(strings(&report, "errors"), [fifo_refused(&pipe)]);
    let (passed, stderr) = check(&d.jobs_dir());
    assert!(!passed && stderr.contains(&fifo_refused(&pipe)), "{stderr}");
    let (passed, stderr) = check(&pipe);
    assert!(!passed && stderr.contains(&fifo_refused(&pipe)), "{stderr}");
    assert!(is_known(&d, "ok"));
}
