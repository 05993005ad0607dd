//! Who a run's process is and what it starts from: chimed's own identity (the HOME, USER,
//! SHELL and PATH a job of chimed's own user gets) and each run's environment (defaults, then the
//! job's own entries, then chime's `CHIME_*` variables). Another user's job gets its HOME, USER
//! and SHELL from the run-as helper, once it is that user ([`crate::as_user`]).

use super::SpawnOrder;

use std::path::{Path, PathBuf};

/// Who the daemon is, and what every job's environment starts from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    /// The daemon's own user: HOME, USER and SHELL for jobs that run as the daemon's user.
    pub home: String,
    pub user: String,
    pub shell: String,
    /// `PATH` for jobs that do not set their own.
    pub path: String,
    pub lang: String,
    /// This executable, for `__run-as`.
    pub helper: PathBuf,
}

impl Identity {
    /// Reads the daemon's identity. Call once at start (it may consult NSS).
    pub fn of_this_process() -> std::io::Result<Self> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        Ok(Self {
            uid: uid.as_raw(),
            home: user
                .as_ref()
                .map(|u| u.dir.display().to_string())
                .or_else(|| std::env::var("HOME").ok())
                .unwrap_or_else(|| "/".into()),
            user: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string()),
            shell: user
                .as_ref()
                .map(|u| u.shell.display().to_string())
                .unwrap_or_else(|| "/bin/sh".into()),
            path: crate::spec::DEFAULT_PATH.into(),
            lang: std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            // This very executable, even once a package upgrade has replaced or removed the file
            // it was started from: a spawned child is a copy of chimed until it execs, so its
            // /proc/self/exe is chimed's own (and the helper speaks this build's orders).
            helper: if Path::new("/proc/self/exe").exists() {
                PathBuf::from("/proc/self/exe")
            } else {
                std::env::current_exe()?
            },
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The run's environment: defaults, then the job's own entries (which win), then chime's.
pub(super) fn environment(
    id: &Identity,
    order: &SpawnOrder,
    run_as: bool,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), id.path.clone()),
        ("LANG".into(), id.lang.clone()),
    ];
    if !run_as {
        // For another user, the helper sets these from that user's passwd entry.
        env.push(("HOME".into(), id.home.clone()));
        env.push(("USER".into(), id.user.clone()));
        env.push(("LOGNAME".into(), id.user.clone()));
        env.push(("SHELL".into(), id.shell.clone()));
    }
    for (key, value) in &order.env {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    for (key, value) in [
        ("CHIME_JOB_ID", order.job.0.to_string()),
        ("CHIME_RUN_ID", order.run.0.to_string()),
        ("CHIME_ATTEMPT", order.attempt.to_string()),
    ] {
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value));
    }
    env
}
