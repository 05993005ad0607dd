//! Run output on disk, per user: what `output_per_user` bounds (see [`crate::limits`]).
//!
//! Each run's output is capped by its job's `max_output`, but a user with many jobs and long
//! histories could still fill the disk, so chimed keeps the bytes of output files each user has
//! on disk: counted once at start from the files themselves ([`Usage::scan`]), charged by each
//! run's writer as it writes ([`crate::runner::output::OutputLog`]), and given back when the
//! older half of a capped run's output is replaced or a run's output is deleted (pruned history,
//! removed or expired jobs). A run whose next write would take its user past the limit keeps
//! nothing more: its log ends with a line saying so, and the user's other runs write again once
//! pruning has made room. Root and chimed's own user are counted but not held to it.

use chime_proto::JobId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Bytes of output files on disk, per user.
#[derive(Debug, Default)]
pub struct Usage {
    by_owner: Mutex<HashMap<u32, u64>>,
}

impl Usage {
    /// Counts the output files under `logs_dir` (`SHARD/JOB-RUN.log` and its older half
    /// `.log.1`), each for the owner `owner_of` gives its job; files of jobs that no longer exist
    /// count for no one. Blocks (it lists the directory).
    pub fn scan(logs_dir: &Path, owner_of: impl Fn(JobId) -> Option<u32>) -> Self {
        let mut by_owner: HashMap<u32, u64> = HashMap::new();
        let mut owners: HashMap<u64, Option<u32>> = HashMap::new();
        for shard in std::fs::read_dir(logs_dir).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = file.file_name();
                let Some(job) = name
                    .to_str()
                    .and_then(|n| n.split_once('-'))
                    .and_then(|(job, _)| job.parse::<u64>().ok())
                else {
                    continue;
                };
                let owner = *owners.entry(job).or_insert_with(|| owner_of(JobId(job)));
                if let (Some(owner), Ok(meta)) = (owner, file.metadata()) {
                    *by_owner.entry(owner).or_default() += meta.len();
                }
            }
        }
        Self {
            by_owner: Mutex::new(by_owner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.by_owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `owner` has on disk.
    pub fn of(&self, owner: u32) -> u64 {
        self.lock().get(&owner).copied().unwrap_or(0)
    }

    /// Charges `bytes` to `owner` if that keeps them within `limit` (`None`: no limit). Returns
    /// whether it was charged.
    pub fn charge(&self, owner: u32, bytes: u64, limit: Option<u64>) -> bool {
        let mut by_owner = self.lock();
        let used = by_owner.entry(owner).or_default();
        if limit.is_some_and(|limit| used.saturating_add(bytes) > limit) {
            return false;
        }
        *used = used.saturating_add(bytes);
        true
    }

    /// Gives `bytes` back to `owner` (their files shrank or were deleted).
    pub fn release(&self, owner: u32, bytes: u64) {
        let mut by_owner = self.lock();
        if let Some(used) = by_owner.get_mut(&owner) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                by_owner.remove(&owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_releases_make_room() {
        let usage = Usage::default();
        assert!(usage.charge(1000, 60, Some(100)));
        assert!(!usage.charge(1000, 50, Some(100)));
        assert!(
            usage.charge(1001, 50, Some(100)),
            "another user is not held up"
        );
        assert!(usage.charge(0, 1_000, None), "no limit for root");
        usage.release(1000, 30);
        assert!(usage.charge(1000, 50, Some(100)));
        assert_eq!(usage.of(1000), 80);
    }

    #[test]
    fn a_scan_counts_each_users_files() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("0");
        std::fs::create_dir(&shard).unwrap();
        std::fs::write(shard.join("5-1.log"), vec![0u8; 100]).unwrap();
        std::fs::write(shard.join("5-1.log.1"), vec![0u8; 40]).unwrap();
        std::fs::write(shard.join("6-2.log"), vec![0u8; 7]).unwrap();
        std::fs::write(shard.join("9-3.log"), vec![0u8; 1000]).unwrap();
        let usage = Usage::scan(dir.path(), |job| match job.0 {
            5 => Some(1000),
            6 => Some(1001),
            _ => None,
        });
        assert_eq!((usage.of(1000), usage.of(1001)), (140, 7));
    }
}
