//! Making and removing runs' cgroups on a thread of their own, off the way from one run's end to
//! the next run's start.
//!
//! Making a cgroup (`mkdir`: the kernel creates its files) and removing one (`rmdir`) cost tens
//! of microseconds each, about a fifth of a quick run. So a run's cgroup is asked for when the
//! run is opened ([`Maker::prepare`], at most [`AHEAD`] waiting), made here while the run waits
//! for its slot, and taken when its process starts ([`Maker::take`]); one not ready by then is
//! made there and then. A run's cgroup is removed here once its end is reported
//! ([`Maker::remove`]), and one still holding processes a `--keep-children` run left is looked
//! at again every [`KEPT_EVERY`] until it is empty.

use super::{RunCgroup, Tree};
use chime_proto::ResourceLimits;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most cgroups made ahead of their runs' starts.
pub const AHEAD: usize = 64;

/// How often a cgroup kept by `--keep-children` processes is looked at.
const KEPT_EVERY: Duration = Duration::from_secs(10);

/// Where a run's cgroup made ahead stands.
#[derive(Debug)]
enum Slot {
    /// Asked for; not begun.
    Asked,
    /// Being made on the maker's thread.
    Making,
    Ready(RunCgroup),
    /// Taken by its start while still being made: the start made it itself (the same directory),
    /// so the maker drops its own handle and leaves the directory.
    TakenEarly,
    /// Its run never started: the maker removes it once made.
    Discarded,
}

#[derive(Debug)]
enum Order {
    Make {
        uid: u32,
        run: u64,
        limits: ResourceLimits,
        tasks_per_user: Option<u32>,
    },
    Remove {
        cgroup: RunCgroup,
        /// Found empty when the run ended.
        emptied: bool,
    },
}

#[derive(Debug)]
struct Shared {
    tree: Arc<Tree>,
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes runs' cgroups ahead and removes them after, on its own thread.
#[derive(Debug)]
pub struct Maker {
    shared: Arc<Shared>,
    orders: Mutex<Sender<Order>>,
}

impl Maker {
    /// Starts the maker's thread for `tree` (which must have a subtree).
    pub fn start(tree: Arc<Tree>) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            tree,
            slots: Mutex::default(),
        });
        let (orders, inbox) = channel();
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("chimed-cgroups".into())
            .spawn(move || serve(&worker, &inbox))?;
        Ok(Self {
            shared,
            orders: Mutex::new(orders),
        })
    }

    pub fn tree(&self) -> &Arc<Tree> {
        &self.shared.tree
    }

    fn send(&self, order: Order) {
        let orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        // The thread ends only with the maker.
        let _ = orders.send(order);
    }

    /// Asks for `run`'s cgroup ahead of its start (a run just opened), unless [`AHEAD`] are
    /// waiting already. Cheap: the engine's thread calls it.
    pub fn prepare(
        &self,
        uid: u32,
        run: u64,
        limits: &ResourceLimits,
        tasks_per_user: Option<u32>,
    ) {
        {
            let mut slots = self.shared.slots();
            if slots.len() >= AHEAD || slots.contains_key(&run) {
                return;
            }
            slots.insert(run, Slot::Asked);
        }
        self.send(Order::Make {
            uid,
            run,
            limits: limits.clone(),
            tasks_per_user,
        });
    }

    /// `run`'s cgroup, for its process to start in: the one made ahead, or one made now.
    pub fn take(
        &self,
        uid: u32,
        run: u64,
        limits: &ResourceLimits,
        tasks_per_user: Option<u32>,
    ) -> io::Result<RunCgroup> {
        {
            let mut slots = self.shared.slots();
            match slots.remove(&run) {
                Some(Slot::Ready(cgroup)) => return Ok(cgroup),
                Some(Slot::Making) => {
                    slots.insert(run, Slot::TakenEarly);
                }
                _ => {}
            }
        }
        RunCgroup::make(&self.shared.tree, uid, run, limits, tasks_per_user)
    }

    /// A run that will not start (taken back before its process started): its cgroup, if one
    /// was made ahead, is removed.
    pub fn discard(&self, run: u64) {
        let mut slots = self.shared.slots();
        match slots.remove(&run) {
            Some(Slot::Ready(cgroup)) => {
                drop(slots);
                self.send(Order::Remove {
                    cgroup,
                    emptied: true,
                });
            }
            Some(Slot::Making) => {
                slots.insert(run, Slot::Discarded);
            }
            _ => {}
        }
    }

    /// Removes a run's cgroup once its end is reported: now if it is empty, or once the
    /// processes kept in it have ended.
    pub fn remove(&self, cgroup: RunCgroup, emptied: bool) {
        self.send(Order::Remove { cgroup, emptied });
    }
}

/// The maker's thread: until the maker is dropped.
fn serve(shared: &Shared, inbox: &Receiver<Order>) {
    let mut kept: Vec<PathBuf> = Vec::new();
    let mut look_at_kept = Instant::now() + KEPT_EVERY;
    loop {
        let order = match inbox.recv_timeout(KEPT_EVERY) {
            Ok(order) => Some(order),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match order {
            Some(Order::Make {
                uid,
                run,
                limits,
                tasks_per_user,
            }) => make(shared, uid, run, &limits, tasks_per_user),
            Some(Order::Remove { cgroup, emptied }) => {
                if !emptied && cgroup.populated() {
                    kept.push(cgroup.dir().to_owned());
                } else if let Err(error) = cgroup.remove() {
                    tracing::warn!(%error, "cannot remove a run's cgroup");
                }
            }
            None => {}
        }
        if Instant::now() >= look_at_kept {
            kept.retain(|dir| super::run::populated(dir) || std::fs::remove_dir(dir).is_err());
            look_at_kept = Instant::now() + KEPT_EVERY;
        }
    }
}

fn make(shared: &Shared, uid: u32, run: u64, limits: &ResourceLimits, tasks: Option<u32>) {
    {
        let mut slots = shared.slots();
        match slots.get_mut(&run) {
            Some(slot @ Slot::Asked) => *slot = Slot::Making,
            // Taken (made by its start) or discarded before it was begun.
            _ => return,
        }
    }
    let made = RunCgroup::make(&shared.tree, uid, run, limits, tasks);
    let mut slots = shared.slots();
    match (slots.remove(&run), made) {
        (Some(Slot::Making), Ok(cgroup)) => {
            slots.insert(run, Slot::Ready(cgroup));
        }
        (Some(Slot::Discarded), Ok(cgroup)) => {
            drop(slots);
            let _ = cgroup.remove();
        }
        // Taken early: its start made (and uses) the same directory.
        (_, Ok(_)) => {}
        // Its start will make it itself, and say why it could not.
        (_, Err(_)) => {}
    }
}
