//! chimed's file descriptors: what it inherits, and how many it may have.
//!
//! **Inherited descriptors are closed.** Whoever starts chimed (a shell, `sudo`, a script, an
//! init system) may leave descriptors open; a root chimed started by hand from a shell that had
//! `/etc/shadow` open would otherwise hold it, and so would everything that does not close it.
//! [`close_inherited`] closes every descriptor but stdin, stdout, stderr and the sockets systemd
//! passes (`LISTEN_FDS`), first thing in `main`, before any thread or descriptor of chimed's own
//! exists. chimed opens its own descriptors close-on-exec, but libraries it loads (NSS, PAM
//! modules) need not, and a job started at that moment would inherit what they hold: so the
//! run-as helper closes every descriptor above 2 before it becomes the user, and jobs get only
//! their 0, 1 and 2.
//!
//! **The limit is raised and budgeted.** The soft `RLIMIT_NOFILE` (1024 under most shells and
//! systemd) is raised to the hard one at start ([`raise_limit`]); chimed.service also sets
//! `LimitNOFILE=`. Each connection costs one descriptor and each running job about six (two
//! pipes, a pidfd, its log file, and the spawn's transient ones), plus a few dozen for the
//! database, the journal and the runtime: [`budget`] says how many connections fit beside
//! `--max-running` jobs.

/// The sockets systemd passed to this process: `3..3 + LISTEN_FDS` when `LISTEN_PID` is ours.
fn passed_by_systemd() -> u32 {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .min(1024)
}

/// Closes every descriptor above 2 except those systemd passed. Call it first thing in `main`,
/// while chimed has no descriptor of its own above 2.
pub fn close_inherited() {
    close_from(3 + passed_by_systemd());
}

/// Closes every descriptor from `first` on. The caller promises that none of them is owned by
/// anything in this process (`main` before anything is opened; a helper once it has read its
/// order).
pub fn close_from(first: u32) {
    // SAFETY: close_range(2) takes plain integers; the descriptors it closes are not owned by any
    // Rust object (the caller's promise); the ones systemd passed are below `first`, kept for
    // `server::take_activated`.
    #[allow(unsafe_code)]
    let closed = unsafe { libc::close_range(first, u32::MAX, 0) };
    if closed != 0 {
        // Kernels before 5.9: close them one by one, as listed in /proc.
        let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for fd in open.into_iter().filter(|fd| *fd >= first as i32) {
            // SAFETY: as above; the directory's own descriptor is closed by now (EBADF).
            #[allow(unsafe_code)]
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Descriptors chimed needs besides its connections and its jobs: the database, the journal,
/// the runtime's epoll and wake-ups, the lock files, `/dev/null`, helpers being spawned.
pub const FIXED: u64 = 64;

/// Descriptors one running job holds (its pipes, pidfd and log file, and the spawn's transient
/// ones).
pub const PER_RUN: u64 = 6;

/// Raises the soft limit on open descriptors to the hard limit. Returns the soft limit now in
/// force.
pub fn raise_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// How many connections fit in `limit` descriptors beside `max_running` jobs: at most `wanted`,
/// at least 16 (a chimed that cannot be reached cannot be told to stop its jobs).
pub fn budget(limit: u64, max_running: u64, wanted: u64) -> u64 {
    let left = limit
        .saturating_sub(FIXED)
        .saturating_sub(max_running.saturating_mul(PER_RUN));
    left.min(wanted).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_get_what_jobs_leave() {
        assert_eq!(budget(65_536, 64, 1024), 1024);
        assert_eq!(budget(1024, 64, 1024), 1024 - 64 - 64 * 6);
        assert_eq!(budget(1024, 1000, 1024), 16);
    }
}
