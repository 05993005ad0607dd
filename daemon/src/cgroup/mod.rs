//! Containment: a cgroup v2 per run, under a subtree chimed owns (issue 12; being built).
//!
//! This module will find or make chimed's subtree, make and remove each run's cgroup, end what is
//! in one, apply a run's limits and read what it cost. For now it holds the vocabulary the rest
//! of chimed uses: which controllers the subtree has ([`Controllers`]), so that a limit whose
//! controller is missing is refused when the job is submitted.

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
