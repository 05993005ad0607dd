//! The sweep at start: what the runs of a chimed that died left running is ended before any of
//! them is retried, so that "at least once" never means two copies at once.

use super::Tree;
use super::run::{kill, populated, procs};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long the sweep waits for a killed cgroup to empty before it goes on without it.
const EMPTY_WITHIN: Duration = Duration::from_secs(10);

/// Ends every process in the cgroups of `open` runs (those the store says were running when
/// chimed stopped) and removes every empty run cgroup. Returns, per open run that had any, how
/// many processes were ended. A populated cgroup of a run that is not open belongs to a run
/// that ended with `--keep-children`: it is left alone. Blocks (call it before the engine runs).
pub fn end_leftovers(tree: &Tree, open: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut ended = HashMap::new();
    for (uid, run, dir) in tree.present_runs() {
        if let Some(run) = run.filter(|r| open.contains(r))
            && populated(&dir)
        {
            let count = procs(&dir).len() as u32;
            kill(&dir);
            let deadline = Instant::now() + EMPTY_WITHIN;
            while populated(&dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if populated(&dir) {
                tracing::error!(run_id = run, uid, cgroup = %dir.display(), "processes of a lost run are still running 10 s after cgroup.kill");
            } else {
                tracing::warn!(
                    run_id = run,
                    uid,
                    processes = count,
                    "ended what a lost run left running, before any retry"
                );
            }
            ended.insert(run, count);
        }
        if !populated(&dir) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    ended
}
