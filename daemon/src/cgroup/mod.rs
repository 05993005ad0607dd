//! Containment: a cgroup v2 per run, under a subtree chimed owns.
//!
//! # Theory of operation
//!
//! At start chimed finds or makes its subtree ([`tree`]): delegated by systemd
//! (`Delegate=yes`), made by a root chimed for itself, or none (then runs are process groups, as
//! `status` and the log say). Every run's process is started straight into a cgroup of its own,
//! `<subtree>/u<uid>/c<n>`, labelled with the run it serves (the extended attribute
//! `user.chime.run`; [`run`]): the kernel starts the process in it (`clone3` with
//! `CLONE_INTO_CGROUP`; where the kernel lacks it, the process writes itself into it before it
//! executes the job's program, [`crate::runner::spawn`]), so nothing it starts, even in a
//! session of its own, is outside.
//! Each user's runs share `u<uid>`, which carries the per-user tasks limit.
//!
//! The runner ends a run as a whole: SIGTERM to every process in the cgroup, `cgroup.kill`
//! after the grace, and `cgroup.kill` for whatever the main process leaves behind when it exits
//! (unless `--keep-children`). Once the cgroup is empty, its cost is read (`cpu.stat`,
//! `memory.peak`, `io.stat`, `memory.events`) and it is removed. [`maker`] makes runs' cgroups
//! ahead of their starts and removes them after their ends, on a thread of its own, so that
//! neither is on the way from one run's end to the next one's start.
//!
//! At start, before a run that was open when chimed died is retried, [`sweep`] ends what is
//! still running in its cgroup and says how many processes it ended, for the run's history.

pub mod maker;
pub mod run;
pub mod sweep;
pub mod tree;

pub use maker::Maker;
pub use run::RunCgroup;
pub use tree::{Mode, Tree};

/// The controllers chimed can enable for its runs' cgroups. A limit needs its controller:
/// `memory_max` memory, `cpu_quota_pct` cpu, `tasks_max` pids, `io_weight` io.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controllers {
    pub cpu: bool,
    pub memory: bool,
    pub pids: bool,
    pub io: bool,
}

impl Controllers {
    /// From a `cgroup.controllers` file's text (`"cpu io memory pids"`).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for word in text.split_whitespace() {
            match word {
                "cpu" => out.cpu = true,
                "memory" => out.memory = true,
                "pids" => out.pids = true,
                "io" => out.io = true,
                _ => {}
            }
        }
        out
    }

    /// The names of the controllers present, for messages and `status`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.cpu, "cpu"),
            (self.io, "io"),
            (self.memory, "memory"),
            (self.pids, "pids"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}
