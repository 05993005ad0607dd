//! Which opened runs start when: processes alive per queue and per user, and the runs waiting
//! for a slot.
//!
//! The engine may open more runs of a queue than the queue may run at once (runs opened ahead for
//! quick queues, see [`crate::engine::batch::admission`]); [`Dispatch::take_ready`] starts at most
//! the queue's limit of processes, `--max-running` in all and `running_per_user` per user, and
//! when a process ends its supervisor takes the next ready runs itself, without waiting for the
//! engine. It also keeps how long each queue's runs lately took, which makes a queue *quick*.

use super::Launch;
use std::collections::HashMap;
use std::time::Duration;

/// A run the engine has opened whose process has not started yet.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) queue: String,
    pub(super) owner: u32,
    pub(super) launch: Launch,
}

/// Processes alive, as [`View::live`] reads them.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub by_queue: HashMap<String, usize>,
    pub by_owner: HashMap<u32, usize>,
    pub total: usize,
}

/// What queries may see of the runner: which opened runs still wait for a slot.
#[derive(Debug, Clone)]
pub struct View(Dispatcher);

impl View {
    pub(super) fn new(dispatch: Dispatcher) -> Self {
        Self(dispatch)
    }

    /// Processes alive now: per queue, per owner and in all (why a queued job waits).
    pub fn live(&self) -> Live {
        let d = lock(&self.0);
        Live {
            by_queue: d.live.clone(),
            by_owner: d.live_by_owner.clone(),
            total: d.live_total,
        }
    }

    /// Runs opened ahead and waiting for a slot, per job (at most a few per quick queue).
    pub fn waiting(&self) -> crate::job::Waiting {
        let mut out = crate::job::Waiting::new();
        for pending in &lock(&self.0).pending {
            *out.entry(pending.launch.supervised.job).or_default() += 1;
        }
        out
    }
}

/// Processes alive per queue and per user, and runs waiting for a slot: shared by the engine
/// (which adds opened runs) and the supervisors (which start the next run when their process
/// ends).
#[derive(Debug)]
pub(super) struct Dispatch {
    pub(super) live: HashMap<String, usize>,
    pub(super) live_total: usize,
    pub(super) live_by_owner: HashMap<u32, usize>,
    /// `running_per_user`, for each user but the administrators.
    pub(super) user_limits: crate::limits::LimitsCell,
    /// Most processes per queue; a queue without an entry has no limit but `max_running`.
    pub(super) limits: HashMap<String, usize>,
    pub(super) max_running: usize,
    /// In the order the engine opened them (due order within a queue).
    pub(super) pending: std::collections::VecDeque<Pending>,
    /// How long each queue's runs have lately taken (a moving average over about four runs).
    pub(super) recent: HashMap<String, Duration>,
}

impl Dispatch {
    /// Takes the pending runs that may start now, in order, and counts them as live.
    pub(super) fn take_ready(&mut self) -> Vec<Launch> {
        let mut ready = Vec::new();
        let mut i = 0;
        let limits = self.user_limits.get();
        while i < self.pending.len() && self.live_total < self.max_running {
            let queue = &self.pending[i].queue;
            let live = self.live.get(queue).copied().unwrap_or(0);
            let owner = self.pending[i].owner;
            let owners = self.live_by_owner.get(&owner).copied().unwrap_or(0);
            let users: usize = self
                .live_by_owner
                .iter()
                .filter(|(who, _)| !limits.is_exempt(**who))
                .map(|(_, n)| n)
                .sum();
            if self.limits.get(queue).is_some_and(|limit| live >= *limit)
                || limits.running_cap(owner).is_some_and(|cap| {
                    owners >= cap || users >= limits.users_running(self.max_running)
                })
            {
                i += 1;
                continue;
            }
            let pending = self.pending.remove(i).expect("index in range");
            *self.live.entry(pending.queue).or_default() += 1;
            *self.live_by_owner.entry(owner).or_default() += 1;
            self.live_total += 1;
            ready.push(pending.launch);
        }
        ready
    }

    /// A process of `queue` and `owner` ended after `took` (`None`: it never started).
    pub(super) fn ended(&mut self, queue: &str, owner: u32, took: Option<Duration>) {
        if let Some(live) = self.live.get_mut(queue) {
            *live = live.saturating_sub(1);
        }
        if let Some(live) = self.live_by_owner.get_mut(&owner) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.live_by_owner.remove(&owner);
            }
        }
        self.live_total = self.live_total.saturating_sub(1);
        if let Some(took) = took {
            let average = self.recent.entry(queue.to_owned()).or_insert(took);
            *average = (*average * 3 + took) / 4;
        }
    }
}

/// The dispatch state, shared by the runner and the supervisors.
pub(super) type Dispatcher = std::sync::Arc<std::sync::Mutex<Dispatch>>;

pub(super) fn lock(dispatch: &Dispatcher) -> std::sync::MutexGuard<'_, Dispatch> {
    // A supervisor that panicked while holding the lock left consistent counts (every update is
    // one statement); carry on.
    dispatch
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
