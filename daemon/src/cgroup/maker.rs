//! Runs' cgroups, reused: a cgroup whose run ended empty serves the next run of the same user.
//!
//! Making a cgroup (`mkdir`: the kernel creates its files) and removing one (`rmdir`, and the
//! kernel's work after it) cost about as much as the rest of a quick run's supervision. So a
//! run's cgroup, once its end is reported and nothing is left in it, goes back to its user's
//! pool ([`Maker::release`]), and the next run of that user takes it ([`Maker::take`]): it is
//! labelled with its new run and its limits are rewritten where they differ. The cgroup's cost
//! figures are running totals, so a run's are their growth during it. A cgroup is made only when
//! the pool is empty, and removed (on a thread of its own) when the pool is full or it still
//! holds what a `--keep-children` run left, once that has ended.
//!
//! Where the runs' cgroups have the memory controller, a cgroup serves one run only:
//! `memory.peak` is the peak since the cgroup was made. A cgroup that was ended with
//! `cgroup.kill` serves no other run either (see [`RunCgroup::reusable`]).

use super::{RunCgroup, Tree};
use chime_proto::ResourceLimits;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most idle cgroups kept per user.
pub const POOL: usize = 32;

/// Most idle cgroups kept in all (each holds three descriptors).
pub const POOL_TOTAL: usize = 256;

/// How often a cgroup kept by `--keep-children` processes is looked at.
const KEPT_EVERY: Duration = Duration::from_secs(10);

/// What the removing thread is given.
#[derive(Debug)]
enum Order {
    Remove(RunCgroup),
    /// Remove once empty.
    Kept(PathBuf),
}

/// Hands out runs' cgroups, reusing those whose runs ended, and removes the rest on a thread of
/// its own.
#[derive(Debug)]
pub struct Maker {
    tree: Arc<Tree>,
    idle: Mutex<HashMap<u32, Vec<RunCgroup>>>,
    /// Idle cgroups of all users: each holds three descriptors.
    idle_total: std::sync::atomic::AtomicUsize,
    orders: Mutex<Option<Sender<Order>>>,
    /// The removing thread, joined when the maker is dropped (its removals done).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Maker {
    /// Starts the removing thread for `tree` (which must have a subtree).
    pub fn start(tree: Arc<Tree>) -> io::Result<Self> {
        let (orders, inbox) = channel();
        let kept = tree.take_kept();
        let thread = std::thread::Builder::new()
            .name("chimed-cgroups".into())
            .spawn(move || serve(&inbox, kept))?;
        Ok(Self {
            tree,
            idle: Mutex::default(),
            idle_total: Default::default(),
            orders: Mutex::new(Some(orders)),
            thread: Some(thread),
        })
    }

    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<u32, Vec<RunCgroup>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, order: Order) {
        let orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        // The thread ends only with the maker.
        if let Some(orders) = orders.as_ref() {
            let _ = orders.send(order);
        }
    }

    /// A cgroup for `run` of `uid`'s job, with `limits`: an idle one of that user's, or a new one
    /// (`tasks_per_user`: the per-user cgroup's limit, rewritten when it changed).
    pub fn take(
        &self,
        uid: u32,
        run: u64,
        limits: &ResourceLimits,
        tasks_per_user: Option<u32>,
    ) -> io::Result<RunCgroup> {
        let reused = self.idle().get_mut(&uid).and_then(Vec::pop);
        if let Some(mut cgroup) = reused {
            self.idle_total
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            // The per-user limit may have changed with a reload.
            self.tree.user_dir(uid, tasks_per_user)?;
            match cgroup.serve(run, limits) {
                Ok(()) => return Ok(cgroup),
                Err(error) => {
                    tracing::warn!(%error, cgroup = %cgroup.dir().display(), "cannot reuse a run cgroup; making a new one");
                    self.send(Order::Remove(cgroup));
                }
            }
        }
        RunCgroup::make(&self.tree, uid, run, limits, tasks_per_user)
    }

    /// A run's cgroup after its end is reported (or its process could not start): back to its
    /// user's pool if it is empty, else removed once what a `--keep-children` run left in it
    /// has ended.
    pub fn release(&self, cgroup: RunCgroup) {
        if cgroup.populated() {
            self.send(Order::Kept(cgroup.dir().to_owned()));
            return;
        }
        if cgroup.reusable() && !self.tree.controllers.memory {
            let mut idle = self.idle();
            let pool = idle.entry(cgroup.uid).or_default();
            let total = self.idle_total.load(std::sync::atomic::Ordering::Relaxed);
            if pool.len() < POOL && total < POOL_TOTAL {
                pool.push(cgroup);
                self.idle_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        self.send(Order::Remove(cgroup));
    }
}

impl Drop for Maker {
    /// At a clean stop (the runner is dropped): the idle cgroups are removed.
    fn drop(&mut self) {
        for (_, pool) in self.idle().drain() {
            for cgroup in pool {
                let _ = cgroup.remove();
            }
        }
        // The thread finishes the removals it was given, then ends.
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The removing thread: until the maker is dropped.
fn serve(inbox: &Receiver<Order>, mut kept: Vec<PathBuf>) {
    let mut look_at_kept = Instant::now() + KEPT_EVERY;
    loop {
        match inbox.recv_timeout(KEPT_EVERY) {
            Ok(Order::Remove(cgroup)) => {
                if let Err(error) = cgroup.remove() {
                    tracing::warn!(%error, "cannot remove a run's cgroup");
                }
            }
            Ok(Order::Kept(dir)) => kept.push(dir),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= look_at_kept {
            kept.retain(|dir| super::run::populated(dir) || std::fs::remove_dir(dir).is_err());
            look_at_kept = Instant::now() + KEPT_EVERY;
        }
    }
}
