//! The janitor: a thread of its own that deletes removed runs' output files, so that the engine
//! never waits on the file system for them, and gives their bytes back to their owners' share.

use chime_proto::{JobId, RunId};
use std::sync::mpsc;

/// Deletes removed runs' output files, off the engine thread, and gives their bytes back to
/// their owners' share of the disk.
pub(super) fn janitor(
    logs_dir: std::path::PathBuf,
    usage: std::sync::Arc<crate::runner::usage::Usage>,
) -> mpsc::Sender<(JobId, RunId, u32)> {
    let (tx, rx) = mpsc::channel::<(JobId, RunId, u32)>();
    let spawned = std::thread::Builder::new()
        .name("chimed-janitor".into())
        .spawn(move || {
            for (job, run, owner) in rx {
                let freed = crate::runner::output::delete(&logs_dir, job, run);
                usage.release(owner, freed);
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the janitor thread; pruned output stays on disk");
    }
    tx
}
