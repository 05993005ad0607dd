//! Faults a host really has (issue 10): exhausted descriptors, a full disk, damage, huge pages.
//! Each test is the fault; each fails on a chimed that does not survive it.

use chime_tests::{Daemon, wait_until};
use std::time::Duration;

/// Issue 10, item 2: at a low open files limit, a burst of runs used to fail some for good
/// ("Too many open files"). A run that cannot get descriptors now waits and starts once some
/// are free.
#[test]
fn a_burst_beyond_the_open_files_limit_runs_every_job() {
    let mut d = Daemon::prepare(&[]);
    d.launch_command(d.command_after("ulimit -n 128")).unwrap();
    // Sixty-four at once need about 384 descriptors; chimed has 128.
    let ids: Vec<u64> = (0..200)
        .map(|_| d.add(&["--", "/bin/sleep", "0.5"]))
        .collect();
    wait_until(Duration::from_secs(180), "200 jobs to finish", || {
        ids.iter()
            .all(|id| {
                matches!(
                    d.show(*id)["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
            .then_some(())
    });
    let failed: Vec<(u64, serde_json::Value)> = ids
        .iter()
        .map(|id| (*id, d.show(*id)))
        .filter(|(_, job)| job["state"] != "succeeded")
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 jobs did not succeed, e.g. {}",
        failed.len(),
        failed[0].1["runs"]
    );
}
