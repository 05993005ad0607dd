//! The engine thread's CPU priority: timers fire on time on a machine whose CPUs are busy.
//!
//! Every firing passes through the engine thread: it wakes at the due time, applies the batch
//! and commits it. Under the kernel's fair scheduler a thread that wakes on a CPU running a
//! CPU-bound program waits for it to be preempted, and a firing's path has several such waits
//! (the wake-up, the commit's I/O completion). Measured with bench-timers (two CPU-bound loops
//! beside it on this 2-core machine, `--hogs 2` or separate processes), 10,000 firings a second
//! were seen by a watcher with a p99 lateness of 10-20 ms, 5-9 ms of it at commit; a niceness of
//! -10 for the whole daemon gave 14-16 ms. With the engine thread under `SCHED_RR` it was
//! 2.9-9.1 ms, 1-3 ms at commit, the same as with every thread of chimed there: the rest is the
//! watcher's own wait for a CPU.
//!
//! So, by default, the engine thread waits for due times under `SCHED_RR` at the lowest
//! real-time priority (1), as chronyd and PipeWire run theirs, and keeps it through the batch the
//! clock started. But a batch that a request or a run's report started runs under the normal
//! scheduler: measured with bench-submit, an engine that stayed real-time through clients'
//! requests cut acknowledged submissions by a fifth (29,000 against 37,000/s with 32 clients;
//! 95,000 against 116,000/s with 8 requests in flight each), because it preempted the very
//! clients and connection tasks whose requests fill its next batch, and batches shrank. The
//! switch is one system call, made only when the kind of wake-up changes ([`Switch`]).
//!
//! Only that thread: the async workers, which spawn runs' processes and serve clients, stay
//! under the normal scheduler, and the thread is set with `SCHED_RESET_ON_FORK`, so that nothing
//! it ever starts inherits the policy. What that costs others is bounded:
//!
//! - the engine sleeps between batches and blocks in every commit's `fdatasync`; it uses a CPU
//!   only while it applies a batch (34% of one core at 10,000 firings a second);
//! - the kernel keeps 5% of every second for normal threads whatever real-time threads do
//!   (`kernel.sched_rt_runtime_us`), and an engine that stops turning stops pinging systemd's
//!   watchdog (`WatchdogSec=` in chimed.service), which kills and restarts it.
//!
//! `engine_priority = "normal"` in `chimed.toml` (or `--engine-priority normal`) keeps it
//! under the normal scheduler. Without the privilege (chimed is not root and has no
//! `RLIMIT_RTPRIO`, `LimitRTPRIO=` in a unit) the thread stays normal, and says so: `status`
//! shows which priority the engine got, and why.

use clap::ValueEnum;

/// Which scheduler the engine thread asks for (`engine_priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnginePriority {
    /// `SCHED_RR` at priority 1, when permitted.
    #[default]
    Realtime,
    /// The normal scheduler, like every other thread.
    Normal,
}

/// The real-time priority the engine asks for: the lowest, below any real-time thread the
/// system has for its own reasons (audio, clocks, interrupts' threads).
const PRIORITY: libc::c_int = 1;

/// What the engine thread got, in words for `status` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The thread runs under `SCHED_RR`.
    pub realtime: bool,
    pub description: String,
}

/// The engine thread's scheduling, switched between the clock's batches and the others.
#[derive(Debug)]
pub struct Switch {
    /// Real-time was asked for and permitted.
    permitted: bool,
    /// The thread is under `SCHED_RR` now.
    realtime: bool,
}

impl Switch {
    /// Sets the calling thread's scheduling as asked (real-time, as for the clock's work), and
    /// says what it got.
    pub fn start(wanted: EnginePriority) -> (Self, Outcome) {
        let normal = |description: String| {
            let switch = Self {
                permitted: false,
                realtime: false,
            };
            (
                switch,
                Outcome {
                    realtime: false,
                    description,
                },
            )
        };
        match wanted {
            EnginePriority::Normal => normal("normal (engine_priority = \"normal\")".to_owned()),
            EnginePriority::Realtime => match set(libc::SCHED_RR, PRIORITY) {
                Ok(()) => (
                    Self {
                        permitted: true,
                        realtime: true,
                    },
                    Outcome {
                        realtime: true,
                        description: format!(
                            "realtime while it waits for due times and fires them (SCHED_RR, \
                             priority {PRIORITY}; the engine thread only), normal while it \
                             handles requests"
                        ),
                    },
                ),
                Err(error) => normal(format!(
                    "normal: realtime was refused ({error}); it needs root or an RLIMIT_RTPRIO \
                     of at least {PRIORITY} (LimitRTPRIO= in a unit), and real-time time in \
                     chimed's cgroup where the kernel divides it"
                )),
            },
        }
    }

    /// Before waiting for the clock: real-time, if permitted.
    pub fn clock(&mut self) {
        if self.permitted && !self.realtime {
            self.realtime = set(libc::SCHED_RR, PRIORITY).is_ok();
        }
    }

    /// Before a batch that a request or a report started: the normal scheduler.
    pub fn requests(&mut self) {
        if self.realtime {
            // Leaving real-time is always permitted; if it failed, stay as we are.
            self.realtime = set(libc::SCHED_OTHER, 0).is_err();
        }
    }
}

/// `policy | SCHED_RESET_ON_FORK` at `priority` for the calling thread.
fn set(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, policy | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy, without the reset-on-fork flag (tests).
#[cfg(test)]
fn current_policy() -> libc::c_int {
    // SAFETY: pid 0 is the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_leaves_the_thread_alone() {
        std::thread::spawn(|| {
            let (mut switch, outcome) = Switch::start(EnginePriority::Normal);
            assert!(!outcome.realtime);
            switch.clock();
            assert_eq!(current_policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn realtime_for_the_clock_normal_for_requests_and_never_inherited() {
        std::thread::spawn(|| {
            let (mut switch, outcome) = Switch::start(EnginePriority::Realtime);
            if !outcome.realtime {
                assert!(outcome.description.contains("refused"), "{outcome:?}");
                assert!(
                    !nix::unistd::geteuid().is_root(),
                    "root was refused: {outcome:?}"
                );
                eprintln!("SKIPPED: SCHED_RR needs root or RLIMIT_RTPRIO: {outcome:?}");
                return;
            }
            assert_eq!(current_policy(), libc::SCHED_RR);
            // A thread it starts is back under the normal scheduler.
            let child = std::thread::spawn(current_policy).join().unwrap();
            assert_eq!(child, libc::SCHED_OTHER);
            switch.requests();
            assert_eq!(current_policy(), libc::SCHED_OTHER);
            switch.requests();
            assert_eq!(current_policy(), libc::SCHED_OTHER);
            switch.clock();
            assert_eq!(current_policy(), libc::SCHED_RR);
        })
        .join()
        .unwrap();
    }
}
