//! The disk under the state directory: warned about before it is full, and shared so that the
//! database is the last thing to run out of it.
//!
//! A full disk used to brick chimed: redb latches its first write error and refuses every later
//! commit. Now ([`crate::store::Store::reopen`]) a failed commit reopens the database and chimed
//! recovers by itself once space is back; meanwhile clients are told the disk is full and that
//! nothing was changed, runs that end are recorded once a commit succeeds, and `status` and the
//! metrics show the fault.
//!
//! Before it comes to that, [`watch`] looks at the free space every second:
//! - below [`Thresholds::warn`] (twice the reserve) it warns once, with the figures;
//! - below [`Thresholds::reserve`] (5% of the filesystem, at most 256 MiB) run output stops
//!   being kept (each run cut off says so in its log): the output of jobs is what fills a disk,
//!   and what is left is for the database, which stops last.
//!
//! Both lift by themselves once space is back above the warning level.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the free space is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Free-space levels of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Below it, run output is no longer kept.
    pub reserve: u64,
    /// Below it, chimed warns.
    pub warn: u64,
}

impl Thresholds {
    /// For a filesystem of `size` bytes: a reserve of 5% (at most 256 MiB), a warning at twice it.
    pub fn of(size: u64) -> Self {
        let reserve = (size / 20).min(256 << 20);
        Self {
            reserve,
            warn: reserve.saturating_mul(2),
        }
    }
}

/// Whether run output should stop being kept (the disk is nearly full): set by [`watch`], read by
/// each run's writer.
#[derive(Debug, Clone, Default)]
pub struct Low(Arc<AtomicBool>);

impl Low {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, low: bool) {
        self.0.store(low, Ordering::Relaxed);
    }
}

/// The size and free space of the filesystem holding `dir`.
fn space(dir: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let unit = stat.fragment_size();
    Some((
        stat.blocks().saturating_mul(unit),
        stat.blocks_available().saturating_mul(unit),
    ))
}

/// Watches the free space of `dir`'s filesystem until `stop`, warning and setting `low` as the
/// module docs say.
pub async fn watch(dir: PathBuf, low: Low, stop: tokio_util::sync::CancellationToken) {
    let mut ticker = tokio::time::interval(EVERY);
    let mut warned = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some((size, free)) = space(&dir) else {
            continue;
        };
        let levels = Thresholds::of(size);
        if free < levels.warn && !warned {
            tracing::warn!(dir = %dir.display(), free_bytes = free, size_bytes = size, "the disk holding chimed's state is getting full; free some space (run output stops being kept below {} bytes free)", levels.reserve);
            warned = true;
        }
        if free < levels.reserve && !low.is_set() {
            tracing::warn!(dir = %dir.display(), free_bytes = free, "the disk holding chimed's state is nearly full: run output is no longer kept, so that the database can go on");
            low.set(true);
        }
        if free >= levels.warn && (warned || low.is_set()) {
            tracing::info!(dir = %dir.display(), free_bytes = free, "the disk holding chimed's state has room again");
            warned = false;
            low.set(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_scale_with_the_filesystem() {
        let small = Thresholds::of(16 << 20);
        assert_eq!(small.reserve, (16 << 20) / 20);
        assert_eq!(small.warn, small.reserve * 2);
        assert_eq!(Thresholds::of(1 << 40).reserve, 256 << 20);
    }
}
