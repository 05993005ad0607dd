//! The sweep at start: what the runs of a chimed that died left running is ended before any of
//! them is retried, so that "at least once" never means two copies at once.

use super::Tree;
use super::run::{kill, populated, procs};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the sweep waits, in all, for the killed cgroups to empty before it goes on without
/// them (a process in uninterruptible sleep, on a hung NFS server, may take longer).
const EMPTY_WITHIN: Duration = Duration::from_secs(10);

/// What the sweep found and did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Per open run that had any: how many processes were ended.
    pub ended: HashMap<u64, u32>,
    /// Populated cgroups of runs that are not open: what `--keep-children` runs left. Removed
    /// once they are empty ([`super::Maker`]).
    pub kept: Vec<PathBuf>,
}

/// Ends every process in the cgroups of `open` runs (those the store says were running when
/// chimed stopped), all at once, and removes every empty run cgroup. A populated cgroup of a run
/// that is not open belongs to a run that ended with `--keep-children`: it is left alone. Blocks
/// at most [`EMPTY_WITHIN`] in all (call it before the engine runs).
pub fn end_leftovers(tree: &Tree, open: &HashSet<u64>) -> Swept {
    let mut swept = Swept::default();
    let mut killed = Vec::new();
    for (uid, run, dir) in tree.present_runs() {
        if !populated(&dir) {
            let _ = std::fs::remove_dir(&dir);
            continue;
        }
        match run.filter(|r| open.contains(r)) {
            Some(run) => {
                let count = procs(&dir).len() as u32;
                kill(&dir);
                swept.ended.insert(run, count);
                killed.push((uid, run, count, dir));
            }
            None => swept.kept.push(dir),
        }
    }
    let deadline = Instant::now() + EMPTY_WITHIN;
    while killed.iter().any(|(.., dir)| populated(dir)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (uid, run, count, dir) in killed {
        if populated(&dir) {
            tracing::error!(run_id = run, uid, cgroup = %dir.display(), "processes of a lost run are still running 10 s after cgroup.kill");
        } else {
            tracing::warn!(
                run_id = run,
                uid,
                processes = count,
                "ended what a lost run left running, before any retry"
            );
            // Not reused: see `RunCgroup::reusable`.
            let _ = std::fs::remove_dir(&dir);
        }
    }
    swept
}
