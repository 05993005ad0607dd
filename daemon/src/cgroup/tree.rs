//! chimed's subtree: where it is, how it was found or made, and what it can do.
//!
//! In the order tried:
//!
//! 1. **Delegated** by systemd (`Delegate=yes` in `chimed.service` and in the user unit). chimed
//!    is a service (`INVOCATION_ID` is set) and its own cgroup is not the root. systemd's rules
//!    for a delegated cgroup say that processes live only in leaves, so chimed first moves itself
//!    into a leaf of its own, `<own>/chimed`, and then keeps its runs beside it, under `<own>`.
//! 2. **Its own**: a root chimed started by hand makes `<cgroup2 mount>/chime/<instance>`, where
//!    the instance is named after chimed's state directory, so that several chimeds on one host
//!    (tests do this) keep apart and a restarted chimed finds the runs its predecessor left.
//! 3. **None**: a user's chimed that systemd did not delegate to, no cgroup v2 mounted, or
//!    `--no-cgroups`. Runs are process groups, as before; `status` and the log say so once.

use super::Controllers;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How chimed came by its subtree, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// systemd delegated chimed's service cgroup to it.
    Delegated,
    /// A root chimed made a subtree of its own.
    Own,
    /// No subtree: runs are process groups. Why, in words for `status` and the log.
    Off(String),
}

/// chimed's subtree: the runs' cgroups are `<base>/u<uid>/c<n>`, each user's carrying the
/// per-user limits.
#[derive(Debug)]
pub struct Tree {
    pub mode: Mode,
    /// `None` when [`Mode::Off`].
    base: Option<PathBuf>,
    /// What the runs' cgroups have.
    pub controllers: Controllers,
    /// Users whose cgroup exists (made once, kept), with the tasks limit last written to it.
    users: Mutex<HashMap<u32, Option<u32>>>,
    /// The number in the next run cgroup's name (`c<n>`).
    names: AtomicU64,
    /// Cgroups found at start holding what `--keep-children` runs left: removed once empty.
    kept: Mutex<Vec<PathBuf>>,
}

/// The controllers chimed enables for its runs, where the parent has them.
const WANTED: [&str; 4] = ["cpu", "io", "memory", "pids"];

impl Tree {
    /// A tree of no cgroups: every run is a process group.
    pub fn off(why: impl Into<String>) -> Self {
        Self {
            mode: Mode::Off(why.into()),
            base: None,
            controllers: Controllers::default(),
            users: Mutex::default(),
            names: AtomicU64::new(1),
            kept: Mutex::default(),
        }
    }

    /// Finds or makes chimed's subtree (see the module's documentation). `state_dir` names the
    /// instance of a hand-started root chimed. Never fails: without a subtree, runs are process
    /// groups, and the reason is in the [`Mode`].
    pub fn find(state_dir: &Path) -> Self {
        let Some(mount) = cgroup2_mount() else {
            return Self::off("no cgroup v2 hierarchy is mounted on this host");
        };
        let own = match own_cgroup() {
            Ok(own) => own,
            Err(e) => return Self::off(format!("cannot read /proc/self/cgroup: {e}")),
        };
        let own_dir = mount.join(own.trim_start_matches('/'));
        let service = std::env::var_os("INVOCATION_ID").is_some();
        let root = nix::unistd::geteuid().is_root();
        let mut delegation_error = None;
        if service && own != "/" {
            match is_delegated(&own_dir).and_then(|()| delegate(&own_dir)) {
                Ok(()) => return Self::at(Mode::Delegated, own_dir),
                Err(e) => delegation_error = Some(e),
            }
        }
        if root {
            let base = mount.join("chime").join(instance(state_dir));
            return match make_own(&mount, &base) {
                Ok(()) => Self::at(Mode::Own, base),
                Err(e) => Self::off(format!("cannot make a cgroup at {}: {e}", base.display())),
            };
        }
        Self::off(match delegation_error {
            Some(e) => format!(
                "systemd did not delegate chimed's cgroup {} to it ({e}); give the unit Delegate=yes",
                own_dir.display()
            ),
            None => "this chimed is not root and was not started by systemd with Delegate=yes"
                .to_owned(),
        })
    }

    fn at(mode: Mode, base: PathBuf) -> Self {
        // Each run's cgroup is labelled with its run (an extended attribute), which cgroupfs
        // keeps from Linux 5.7: without labels the sweep at start could not tell whose
        // processes it finds.
        let probe = rustix::fs::setxattr(
            &base,
            "user.chime.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        );
        if let Err(e) = probe {
            return Self::off(format!(
                "cgroup {} cannot be labelled with an extended attribute ({e}; Linux 5.7 or later is needed)",
                base.display()
            ));
        }
        let _ = rustix::fs::removexattr(&base, "user.chime.probe");
        let controllers = enable_controllers(&base);
        Self {
            mode,
            base: Some(base),
            controllers,
            users: Mutex::default(),
            names: AtomicU64::new(1),
            kept: Mutex::default(),
        }
    }

    /// Cgroups to remove once they are empty (what `--keep-children` runs left, found at
    /// start); the runner's [`super::Maker`] takes them.
    pub fn keep_until_empty(&self, dirs: Vec<PathBuf>) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(dirs);
    }

    pub(super) fn take_kept(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A number for a new run cgroup's name.
    pub fn next_name(&self) -> u64 {
        self.names.fetch_add(1, Ordering::Relaxed)
    }

    /// The directory under which the runs' cgroups are, if there is one.
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    pub fn is_on(&self) -> bool {
        self.base.is_some()
    }

    /// One line for `status` and the log.
    pub fn describe(&self) -> String {
        match (&self.mode, &self.base) {
            (Mode::Off(why), _) => format!("off, runs are process groups: {why}"),
            (mode, Some(base)) => {
                let how = if *mode == Mode::Delegated {
                    "delegated by systemd"
                } else {
                    "made by chimed"
                };
                let controllers = self.controllers.names();
                format!(
                    "a cgroup per run under {} ({how}; controllers: {})",
                    base.display(),
                    if controllers.is_empty() {
                        "none".to_owned()
                    } else {
                        controllers.join(", ")
                    }
                )
            }
            (_, None) => "off".to_owned(),
        }
    }

    /// What `status` shows.
    pub fn info(&self) -> chime_proto::ContainmentInfo {
        chime_proto::ContainmentInfo {
            mode: match self.mode {
                Mode::Delegated => "delegated",
                Mode::Own => "own",
                Mode::Off(_) => "off",
            }
            .to_owned(),
            cgroup: self.base.as_ref().map(|b| b.display().to_string()),
            controllers: self
                .controllers
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            description: self.describe(),
        }
    }

    /// The cgroup of `uid`'s runs, made the first time, with `tasks_max` (written again when it
    /// changes: a reload of `[limits]`).
    pub fn user_dir(&self, uid: u32, tasks_max: Option<u32>) -> io::Result<PathBuf> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| io::Error::other("no cgroup subtree"))?;
        let dir = base.join(format!("u{uid}"));
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let known = users.get(&uid).copied();
        if known.is_none() {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            enable(&dir, &self.controllers);
        }
        if known != Some(tasks_max) {
            if self.controllers.pids {
                let max = tasks_max.map_or("max".to_owned(), |m| m.to_string());
                std::fs::write(dir.join("pids.max"), max)?;
            }
            users.insert(uid, tasks_max);
        }
        Ok(dir)
    }

    /// Every run cgroup present under the subtree: (uid, the run it serves or served last, by its
    /// label, directory). For the sweep at start.
    pub fn present_runs(&self) -> Vec<(u32, Option<u64>, PathBuf)> {
        let mut out = Vec::new();
        let Some(base) = &self.base else {
            return out;
        };
        let Ok(users) = std::fs::read_dir(base) else {
            return out;
        };
        for user in users.flatten() {
            let name = user.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_prefix('u'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(runs) = std::fs::read_dir(user.path()) else {
                continue;
            };
            for run in runs.flatten() {
                if run.file_type().is_ok_and(|t| t.is_dir()) {
                    let dir = run.path();
                    out.push((uid, super::run::labelled_run(&dir), dir));
                }
            }
        }
        out
    }

    /// At a clean stop: removes the users' cgroups and the subtree chimed made, where empty.
    pub fn remove_empty(&self) {
        let Some(base) = &self.base else { return };
        if let Ok(users) = std::fs::read_dir(base) {
            for user in users.flatten() {
                if user.file_name().to_string_lossy().starts_with('u') {
                    let _ = std::fs::remove_dir(user.path());
                }
            }
        }
        if self.mode == Mode::Own {
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// The controllers [`Tree::find`] would find, looked at without making or moving anything (for
/// `chimed --check-config`): a delegated cgroup's own, or for root what the hierarchy's root
/// gives its children.
pub fn probe_controllers() -> Controllers {
    let Some(mount) = cgroup2_mount() else {
        return Controllers::default();
    };
    let own = own_cgroup().unwrap_or_default();
    let own_dir = mount.join(own.trim_start_matches('/'));
    if std::env::var_os("INVOCATION_ID").is_some()
        && !own.is_empty()
        && own != "/"
        && is_delegated(&own_dir).is_ok()
    {
        return Controllers::parse(&read(&own_dir, "cgroup.controllers"));
    }
    if nix::unistd::geteuid().is_root() {
        return Controllers::parse(&read(&mount, "cgroup.subtree_control"));
    }
    Controllers::default()
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// chimed's own cgroup v2 path (`/system.slice/chimed.service`).
pub fn own_cgroup() -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("no cgroup v2 line in /proc/self/cgroup"))
}

/// Whether systemd delegated `own_dir` to this process: it marks a delegated cgroup with the
/// extended attribute `trusted.delegate` (`user.delegate` for a user manager's, from systemd
/// 253), and a user manager's delegated cgroups belong to the user. Root can write any cgroup,
/// so for root only the mark counts: without `Delegate=yes` the service's cgroup is systemd's.
fn is_delegated(own_dir: &Path) -> io::Result<()> {
    let marked = |name: &str| {
        let mut buf = [0u8; 8];
        rustix::fs::getxattr(own_dir, name, &mut buf).is_ok_and(|n| &buf[..n] == b"1")
    };
    if marked("trusted.delegate") || marked("user.delegate") {
        return Ok(());
    }
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(own_dir)?.uid() == euid.as_raw() {
            return Ok(());
        }
    }
    Err(io::Error::other(
        "its cgroup is not marked as delegated (no Delegate=yes in the unit?)",
    ))
}

/// Takes up a delegated cgroup: chimed moves into a leaf of its own, `<own>/chimed`.
fn delegate(own_dir: &Path) -> io::Result<()> {
    let leaf = own_dir.join("chimed");
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // "0" moves the writing process, every thread of it.
    std::fs::write(leaf.join("cgroup.procs"), "0")
}

/// Makes `<mount>/chime/<instance>` for a hand-started root chimed.
fn make_own(mount: &Path, base: &Path) -> io::Result<()> {
    std::fs::create_dir_all(base)?;
    // The parent `chime` holds no process: controllers can be enabled in it for the instances.
    enable(
        &mount.join("chime"),
        &Controllers::parse(&read(mount, "cgroup.controllers")),
    );
    Ok(())
}

/// Enables in `dir`'s children the wanted controllers `dir` has; returns those now enabled.
fn enable_controllers(dir: &Path) -> Controllers {
    let have = Controllers::parse(&read(dir, "cgroup.controllers"));
    enable(dir, &have);
    Controllers::parse(&read(dir, "cgroup.subtree_control"))
}

fn enable(dir: &Path, have: &Controllers) {
    for name in WANTED {
        if have.names().contains(&name) {
            // One at a time: one that cannot be enabled does not stop the others.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{name}"));
        }
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// The name of a hand-started chimed's subtree: a hash of its state directory (FNV-1a, stable
/// across builds, so a restarted chimed finds its predecessor's runs).
fn instance(state_dir: &Path) -> String {
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("i{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_named_after_its_state_directory_and_stays_so() {
        let a = instance(Path::new("/nonexistent/a"));
        assert_eq!(a, instance(Path::new("/nonexistent/a")));
        assert_ne!(a, instance(Path::new("/nonexistent/b")));
        assert_eq!(a.len(), 17);
    }

    #[test]
    fn an_off_tree_says_why_and_has_no_runs() {
        let tree = Tree::off("no cgroup v2 hierarchy is mounted on this host");
        assert!(!tree.is_on());
        assert!(tree.describe().contains("process groups"));
        assert!(tree.present_runs().is_empty());
    }
}
