//! One run's cgroup: made before its process starts, its limits written, its processes ended as
//! one, its cost read, and removed once it is empty.

use super::Tree;
use chime_proto::{ResourceLimits, RunUsage};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A run's cgroup, `<base>/u<uid>/r<run>`.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// The directory, open: the process is started in it (`CLONE_INTO_CGROUP`), or writes
    /// itself into its `cgroup.procs` before it executes.
    handle: File,
    /// The controllers it has: which of the kernel's files there are to read.
    controllers: super::Controllers,
}

impl RunCgroup {
    /// Makes the cgroup of `run` of `uid`'s job, with `limits`. `tasks_per_user`: the per-user
    /// cgroup's limit, set when it is made. A cgroup of that run left by a chimed that died is
    /// taken over (the sweep at start has emptied it).
    pub fn make(
        tree: &Tree,
        uid: u32,
        run: u64,
        limits: &ResourceLimits,
        tasks_per_user: Option<u32>,
    ) -> io::Result<Self> {
        let user = tree.user_dir(uid, tasks_per_user)?;
        let dir = user.join(format!("r{run}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let made = (|| {
            write_limits(&dir, limits)?;
            File::open(&dir)
        })();
        match made {
            Ok(handle) => Ok(Self {
                dir,
                handle,
                controllers: tree.controllers,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
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
        populated(&self.dir)
    }

    /// Sends `signal` to every process in it (SIGTERM before the grace; `chimectl kill`).
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> usize {
        signal_all(&self.dir, signal)
    }

    /// Ends every process in it at once (`cgroup.kill`).
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// What the run cost, and whether the OOM killer ended one of its processes.
    pub fn usage(&self) -> (RunUsage, bool) {
        usage(&self.dir, &self.controllers)
    }

    /// Removes it; a cgroup that still holds processes (`--keep-children`) is left, and removed
    /// by the sweep of a later start.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }
}

fn write_limits(dir: &Path, limits: &ResourceLimits) -> io::Result<()> {
    let set = |file: &str, value: String| {
        std::fs::write(dir.join(file), &value)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set {file} to {value}: {e}")))
    };
    if let Some(bytes) = limits.memory_max {
        set("memory.max", bytes.to_string())?;
        // Swap would let a run go on past its limit, slowly.
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    }
    if let Some(pct) = limits.cpu_quota_pct {
        // Per 100 ms period, as systemd writes CPUQuota=.
        set("cpu.max", format!("{} 100000", u64::from(pct) * 1000))?;
    }
    if let Some(max) = limits.tasks_max {
        set("pids.max", max.to_string())?;
    }
    if let Some(weight) = limits.io_weight {
        set("io.weight", format!("default {weight}"))?;
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

pub fn signal_all(dir: &Path, signal: nix::sys::signal::Signal) -> usize {
    let pids = procs(dir);
    for pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
    }
    pids.len()
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

/// Reads a run's cost from the cgroup at `dir` (see [`RunUsage`]); `true` if the OOM killer
/// killed a process in it.
pub fn usage(dir: &Path, controllers: &super::Controllers) -> (RunUsage, bool) {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    let mut usage = RunUsage::default();
    if let Some(cpu) = read("cpu.stat") {
        usage.cpu_user_us = field(&cpu, "user_usec").unwrap_or(0);
        usage.cpu_system_us = field(&cpu, "system_usec").unwrap_or(0);
    }
    // Only the files of the controllers the cgroup has: each look-up costs a path walk.
    let (memory, io) = (controllers.memory, controllers.io);
    usage.memory_peak_bytes = memory
        .then(|| read("memory.peak"))
        .flatten()
        .and_then(|t| t.trim().parse().ok());
    if let Some(io) = io.then(|| read("io.stat")).flatten() {
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
        usage.io_read_bytes = Some(r);
        usage.io_write_bytes = Some(w);
    }
    let oom = memory
        .then(|| read("memory.events"))
        .flatten()
        .and_then(|t| field(&t, "oom_kill"))
        .is_some_and(|n| n > 0);
    (usage, oom)
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

    #[test]
    fn usage_is_read_from_the_kernels_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        std::fs::write(p.join("memory.peak"), "4096\n").unwrap();
        std::fs::write(
            p.join("io.stat"),
            "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=0 rios=1 wios=0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let all = super::super::Controllers::parse("cpu io memory pids");
        let (usage, oom) = usage(p, &all);
        assert_eq!(
            usage,
            RunUsage {
                cpu_user_us: 1000,
                cpu_system_us: 500,
                memory_peak_bytes: Some(4096),
                io_read_bytes: Some(105),
                io_write_bytes: Some(20),
            }
        );
        assert!(oom);
    }

    #[test]
    fn figures_the_kernel_does_not_keep_are_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "user_usec 7\nsystem_usec 3\n").unwrap();
        let (usage, oom) = usage(dir.path(), &super::super::Controllers::default());
        assert_eq!(usage.cpu_user_us, 7);
        assert_eq!(usage.memory_peak_bytes, None);
        assert_eq!(usage.io_read_bytes, None);
        assert!(!oom);
    }
}
