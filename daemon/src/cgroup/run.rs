//! One run's cgroup: made before its process starts, its limits written, its processes ended as
//! one, its cost read, and removed once it is empty.

use super::Tree;
use chime_proto::{ResourceLimits, RunUsage};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The extended attribute that names the run a cgroup serves (its id in decimal).
pub const RUN_XATTR: &str = "user.chime.run";

/// The kernel's running totals in a cgroup: a run's figures are their growth during it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    cpu_user_us: u64,
    cpu_system_us: u64,
    io_read: Option<u64>,
    io_write: Option<u64>,
    oom_kills: u64,
}

/// A run's cgroup, `<base>/u<uid>/c<n>`, labelled with the run it serves ([`RUN_XATTR`]).
/// Reused by the next run of the same user once empty (see [`super::maker`]), so most runs
/// cost no `mkdir` and no `rmdir`.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// The directory, open: the process is started in it (`CLONE_INTO_CGROUP`), or writes
    /// itself into its `cgroup.procs` before it executes.
    handle: File,
    /// `cgroup.events` and `cpu.stat`, open: read with `pread`, without a path walk each time.
    events: File,
    cpu_stat: File,
    /// The controllers it has: which of the kernel's files there are to read.
    controllers: super::Controllers,
    pub(super) uid: u32,
    /// The limits written to it.
    limits: ResourceLimits,
    /// The totals when the current run began.
    base: Totals,
    /// `cgroup.kill` was written to it. Such a cgroup is never reused: this kernel (6.18) kills
    /// every process started into a cgroup killed before with `CLONE_INTO_CGROUP` (it compares
    /// the parent's cgroup's kill count with the target's), so its next run would die at once.
    killed: std::sync::atomic::AtomicBool,
}

impl RunCgroup {
    /// Makes a new cgroup for `uid`'s runs (`tasks_per_user`: the per-user cgroup's limit) and
    /// gives it to `run`, with `limits`.
    pub fn make(
        tree: &Tree,
        uid: u32,
        run: u64,
        limits: &ResourceLimits,
        tasks_per_user: Option<u32>,
    ) -> io::Result<Self> {
        let user = tree.user_dir(uid, tasks_per_user)?;
        // A name no cgroup has: one left by a chimed that died may hold a kept daemon.
        let dir = loop {
            let dir = user.join(format!("c{}", tree.next_name()));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let made = (|| {
            let mut cgroup = Self {
                handle: File::open(&dir)?,
                events: File::open(dir.join("cgroup.events"))?,
                cpu_stat: File::open(dir.join("cpu.stat"))?,
                dir: dir.clone(),
                controllers: tree.controllers,
                uid,
                limits: ResourceLimits::default(),
                base: Totals::default(),
                killed: Default::default(),
            };
            cgroup.serve(run, limits)?;
            Ok(cgroup)
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir(&dir);
        }
        made
    }

    /// Gives this (empty) cgroup to `run`: labels it, and writes the limits that differ from
    /// those it has.
    pub fn serve(&mut self, run: u64, limits: &ResourceLimits) -> io::Result<()> {
        rustix::fs::fsetxattr(
            &self.handle,
            RUN_XATTR,
            run.to_string().as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )?;
        if self.limits != *limits {
            write_limits(&self.dir, &self.limits, limits)?;
            self.limits = limits.clone();
        }
        Ok(())
    }

    /// Its directory, open, for the spawn.
    pub fn handle(&self) -> &File {
        &self.handle
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any process is in it.
    pub fn populated(&self) -> bool {
        let mut buf = [0u8; 64];
        match self.events.read_at(&mut buf, 0) {
            Ok(n) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "populated 1"),
            Err(_) => populated(&self.dir),
        }
    }

    /// Sends `signal` to every process in it (SIGTERM before the grace; `chimectl kill`).
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> usize {
        signal_all(&self.dir, signal)
    }

    /// Ends every process in it at once (`cgroup.kill`).
    pub fn kill(&self) {
        self.killed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        kill(&self.dir);
    }

    /// Whether it may serve another run: empty, and never killed with `cgroup.kill`.
    pub fn reusable(&self) -> bool {
        !self.killed.load(std::sync::atomic::Ordering::Relaxed) && !self.populated()
    }

    /// What the current run cost (the totals' growth since it began), and whether the OOM
    /// killer ended one of its processes. The next run served counts from here.
    pub fn usage(&mut self) -> (RunUsage, bool) {
        let now = self.totals();
        let base = std::mem::replace(&mut self.base, now);
        let usage = RunUsage {
            cpu_user_us: now.cpu_user_us.saturating_sub(base.cpu_user_us),
            cpu_system_us: now.cpu_system_us.saturating_sub(base.cpu_system_us),
            // The peak since the cgroup was made: it serves one run only where it has the
            // memory controller (see [`super::maker`]).
            memory_peak_bytes: self
                .controllers
                .memory
                .then(|| std::fs::read_to_string(self.dir.join("memory.peak")).ok())
                .flatten()
                .and_then(|t| t.trim().parse().ok()),
            io_read_bytes: now
                .io_read
                .map(|n| n.saturating_sub(base.io_read.unwrap_or(0))),
            io_write_bytes: now
                .io_write
                .map(|n| n.saturating_sub(base.io_write.unwrap_or(0))),
        };
        (usage, now.oom_kills > base.oom_kills)
    }

    fn totals(&self) -> Totals {
        let mut buf = [0u8; 512];
        let cpu = match self.cpu_stat.read_at(&mut buf, 0) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        };
        let read = |file: &str| std::fs::read_to_string(self.dir.join(file)).ok();
        let (io_read, io_write) = match self.controllers.io.then(|| read("io.stat")).flatten() {
            Some(io) => {
                let (r, w) = io_bytes(&io);
                (Some(r), Some(w))
            }
            None => (None, None),
        };
        Totals {
            cpu_user_us: field(&cpu, "user_usec").unwrap_or(0),
            cpu_system_us: field(&cpu, "system_usec").unwrap_or(0),
            io_read,
            io_write,
            oom_kills: self
                .controllers
                .memory
                .then(|| read("memory.events"))
                .flatten()
                .and_then(|t| field(&t, "oom_kill"))
                .unwrap_or(0),
        }
    }

    /// Removes it; a cgroup that still holds processes (`--keep-children`) is left, and removed
    /// by the sweep of a later start.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }
}

/// A `key value` line's value in a flat-keyed cgroup file (`cpu.stat`, `memory.events`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse::<u64>().ok())?
    })
}

/// Bytes read and written, summed over the devices of an `io.stat`.
fn io_bytes(io: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in io.lines() {
        for pair in line.split_whitespace().skip(1) {
            match pair.split_once('=') {
                Some(("rbytes", v)) => r += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => w += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (r, w)
}

/// The run a cgroup at `dir` serves or served last, from its label.
pub fn labelled_run(dir: &Path) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = rustix::fs::getxattr(dir, RUN_XATTR, &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Writes the limits in `to` that differ from `from` (a cgroup reused from a run with other
/// limits goes back to none where `to` has none).
fn write_limits(dir: &Path, from: &ResourceLimits, to: &ResourceLimits) -> io::Result<()> {
    let set = |file: &str, value: String| {
        std::fs::write(dir.join(file), &value)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set {file} to {value}: {e}")))
    };
    if from.memory_max != to.memory_max {
        set(
            "memory.max",
            to.memory_max.map_or("max".into(), |b| b.to_string()),
        )?;
        // Swap would let a run go on past its limit, slowly.
        let swap = if to.memory_max.is_some() { "0" } else { "max" };
        let _ = std::fs::write(dir.join("memory.swap.max"), swap);
    }
    if from.cpu_quota_pct != to.cpu_quota_pct {
        // Per 100 ms period, as systemd writes CPUQuota=.
        let quota = to
            .cpu_quota_pct
            .map_or("max".into(), |pct| (u64::from(pct) * 1000).to_string());
        set("cpu.max", format!("{quota} 100000"))?;
    }
    if from.tasks_max != to.tasks_max {
        set(
            "pids.max",
            to.tasks_max.map_or("max".into(), |m| m.to_string()),
        )?;
    }
    if from.io_weight != to.io_weight {
        set(
            "io.weight",
            format!("default {}", to.io_weight.unwrap_or(100)),
        )?;
    }
    Ok(())
}

/// Whether the cgroup at `dir` holds any process (`cgroup.events`).
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// The processes in the cgroup at `dir`.
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Sends `signal` to every process in the cgroup at `dir`, the cgroup frozen meanwhile: no
/// process in it can exit between the reading of its pid and the signal, so a pid cannot have
/// been given to a process of someone else's by then (chimed is root; the job's user chooses
/// when its processes exit). A frozen process gets its signal when it is thawed.
pub fn signal_all(dir: &Path, signal: nix::sys::signal::Signal) -> usize {
    if !freeze(dir, true) {
        tracing::warn!(cgroup = %dir.display(), %signal, "cannot freeze a run's cgroup to signal its processes; signalling them by pid");
    }
    let pids = procs(dir);
    for pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
    }
    freeze(dir, false);
    pids.len()
}

/// Freezes (or thaws) the cgroup at `dir`; whether it is frozen (or thawed) within 100 ms.
fn freeze(dir: &Path, frozen: bool) -> bool {
    if std::fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }).is_err() {
        return false;
    }
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = std::time::Instant::now() + Duration::from_millis(100);
    loop {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == want) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ends every process in the cgroup at `dir`: `cgroup.kill` (Linux 5.14); before it, SIGKILL to
/// each process listed, a few times over for those started meanwhile.
pub fn kill(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..10 {
        if signal_all(dir, nix::sys::signal::Signal::SIGKILL) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (polling `cgroup.events`, at most `limit`) until the cgroup at `dir` is empty.
pub async fn until_empty(dir: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut wait = Duration::from_millis(1);
    loop {
        if !populated(dir) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reused cgroup gets the new run's limits, and back to none where the new run has none.
    #[test]
    fn only_the_limits_that_differ_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let capped = ResourceLimits {
            tasks_max: Some(8),
            cpu_quota_pct: Some(50),
            ..Default::default()
        };
        write_limits(p, &ResourceLimits::default(), &capped).unwrap();
        assert_eq!(read("pids.max"), "8");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(
            read("memory.max"),
            "",
            "not written: no memory limit either way"
        );
        write_limits(p, &capped, &ResourceLimits::default()).unwrap();
        assert_eq!(read("pids.max"), "max");
        assert_eq!(read("cpu.max"), "max 100000");
    }

    #[test]
    fn the_kernels_files_are_read() {
        assert_eq!(
            field(
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
                "user_usec"
            ),
            Some(1000)
        );
        assert_eq!(field("low 0\noom 1\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(field("user_usec 7\n", "system_usec"), None);
        assert_eq!(
            io_bytes(
                "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=0 rios=1 wios=0\n"
            ),
            (105, 20)
        );
    }
}
