//! Fair limits: what one user may take of a chimed that many users share.
//!
//! A root chimed serves every member of the `chime` group, and without bounds one member could
//! deny service to all the others: hold every connection, fill every running slot, fill the disk
//! with output, keep the engine busy committing their changes, or push everyone's events out of
//! the retained log. Each of those is bounded per user, by the administrator, under `[limits]` in
//! `chimed.toml` (a reload applies changes). Root and chimed's own user are the administrators
//! and are held to none of them (a user's own chimed has no one else to be fair to), but for
//! `min_interval` under schedules: a floor for the host that holds for every job, root's and
//! declared ones too ([`crate::spec::check`]).
//!
//! | setting | default | where it is enforced |
//! |---|---|---|
//! | `connections_per_user` | 64 | accepting a connection ([`crate::connection`]); root always gets in |
//! | `handshake_timeout` | 5s | a new connection must say hello within it |
//! | `idle_timeout` | 10m | a connection with nothing in flight is closed after it |
//! | `running_per_user` | a quarter of `max_running`, at least 1 | opening runs (the engine) and starting processes (the runner); users together take at most seven eighths of `max_running`, the rest is the administrators' reserve |
//! | `jobs_per_user` | 10000 | adding a job (finished ones count until they expire) |
//! | `output_per_user` | 1GiB | writing run output ([`crate::runner::output`]); beyond it a run's output is not kept, and the run's log says so |
//! | `changes_per_second` | 100 | each change a user asks for (add, cancel, pause...) waits its turn: a burst of a second's worth, then this rate |
//! | `queries_per_user` | 4 | queries (`ls`, `show`, `logs`, `status`...) a user has answered at once; more wait their turn |
//! | `journal_lines_per_second` | 50 | lines of a user's jobs' output sent to the journal (`--output journal`): a burst of ten seconds' worth, then this rate; lines beyond it are counted and not sent, so that journald's rate limit for chimed (which would silence everyone's records) is not reached |
//! | `events_per_user` | a quarter of `event_retention` | the user's oldest events leave the log first |
//! | `max_output` | 64MiB | the most a job's `--max-output` may be |
//! | `keep_runs` | 1000 | the most a job's `--keep-runs` may be |
//! | `retention` | 90d | the most a job's `--retention` may be |
//! | `min_interval` | 1s | the shortest `--every`, and the shortest gap between a cron expression's firings, for everyone; a user's shortest first `--backoff` |
//! | `tasks_per_user` | 4096 | processes and threads of all the user's runs at once (a `pids.max` over their runs' cgroups, applied by the runner): an eighth of the kernel's default `pid_max` (32768), so that a fork bomb in one user's jobs leaves the host room, and still 256 per run at the default `running_per_user` |
//!
//! Every refusal names the limit, its value and where it is set ([`Limits::said`]).

use chime_proto::human::{format_duration, format_size};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The default `tasks_per_user`: an eighth of the kernel's default `pid_max` (32768), so that
/// one user's fork bomb leaves room for everyone else, and 256 tasks for each of
/// `running_per_user`'s default 16 runs.
pub const TASKS_PER_USER: u32 = 4096;

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub connections_per_user: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub running_per_user: u32,
    pub jobs_per_user: u64,
    pub output_per_user: u64,
    pub changes_per_second: u32,
    pub queries_per_user: u32,
    pub journal_lines_per_second: u32,
    pub events_per_user: u64,
    pub max_output: u64,
    pub keep_runs: u32,
    pub retention: Duration,
    pub min_interval: Duration,
    /// Processes and threads of all of a user's runs at once (`pids.max` of a cgroup above
    /// them; the runner applies it).
    pub tasks_per_user: u32,
    /// Root, and chimed's own user: held to none of the per-user limits.
    pub admin_uid: u32,
    /// Where they come from, for messages.
    pub source: Source,
}

/// Which limits the configuration file set, and which file it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub set: BTreeSet<&'static str>,
}

/// What `[limits]` in `chimed.toml` says; `None`: the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub connections_per_user: Option<u32>,
    pub handshake_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub running_per_user: Option<u32>,
    pub jobs_per_user: Option<u64>,
    pub output_per_user: Option<u64>,
    pub changes_per_second: Option<u32>,
    pub queries_per_user: Option<u32>,
    pub journal_lines_per_second: Option<u32>,
    pub events_per_user: Option<u64>,
    pub max_output: Option<u64>,
    pub keep_runs: Option<u32>,
    pub retention: Option<Duration>,
    pub min_interval: Option<Duration>,
    pub tasks_per_user: Option<u32>,
}

impl Limits {
    /// The limits of `settings` over the defaults, for a chimed with these other settings.
    pub fn resolve(
        settings: &Settings,
        file: PathBuf,
        max_running: usize,
        event_retention: u64,
        admin_uid: u32,
    ) -> Self {
        let mut set = BTreeSet::new();
        macro_rules! pick {
            ($field:ident, $default:expr) => {{
                match settings.$field {
                    Some(value) => {
                        set.insert(stringify!($field));
                        value
                    }
                    None => $default,
                }
            }};
        }
        Self {
            connections_per_user: pick!(connections_per_user, 64),
            handshake_timeout: pick!(handshake_timeout, Duration::from_secs(5)),
            idle_timeout: pick!(idle_timeout, Duration::from_secs(600)),
            running_per_user: pick!(running_per_user, (max_running as u32 / 4).max(1)),
            jobs_per_user: pick!(jobs_per_user, 10_000),
            output_per_user: pick!(output_per_user, 1 << 30),
            changes_per_second: pick!(changes_per_second, 100),
            queries_per_user: pick!(queries_per_user, 4),
            journal_lines_per_second: pick!(journal_lines_per_second, 50),
            events_per_user: pick!(events_per_user, (event_retention / 4).max(1)),
            max_output: pick!(max_output, 64 << 20),
            keep_runs: pick!(keep_runs, 1000),
            retention: pick!(retention, Duration::from_secs(90 * 86_400)),
            min_interval: pick!(min_interval, Duration::from_secs(1)),
            tasks_per_user: pick!(tasks_per_user, TASKS_PER_USER),
            admin_uid,
            source: Source { file, set },
        }
    }

    /// The defaults, for a chimed of `admin_uid` with default settings (before a configuration
    /// file is read).
    pub fn defaults(admin_uid: u32) -> Self {
        Self::resolve(&Settings::default(), PathBuf::new(), 64, 100_000, admin_uid)
    }

    /// Whether `uid` is held to none of the per-user limits: root and chimed's own user.
    pub fn is_exempt(&self, uid: u32) -> bool {
        uid == 0 || uid == self.admin_uid
    }

    /// The per-user running limit of `uid`, if any.
    pub fn running_cap(&self, uid: u32) -> Option<usize> {
        (!self.is_exempt(uid)).then_some(self.running_per_user as usize)
    }

    /// How many of `max_running` slots users may take in all: all but a reserve of an eighth (at
    /// least one) that only root and chimed's own user may use, so that however many users are at
    /// their `running_per_user`, the administrators' jobs still start.
    pub fn users_running(&self, max_running: usize) -> usize {
        max_running.saturating_sub((max_running / 8).max(1)).max(1)
    }

    /// `setting = value (where it is set)`, for a refusal.
    pub fn said(&self, setting: &'static str) -> String {
        let value = self.value(setting);
        let place = if self.source.set.contains(setting) {
            format!("set under [limits] in {}", self.source.file.display())
        } else {
            format!(
                "the default; set it under [limits] in {}",
                self.source.file.display()
            )
        };
        format!("{setting} = {value}, {place}")
    }

    /// A limit's value for people.
    pub fn value(&self, setting: &str) -> String {
        match setting {
            "connections_per_user" => self.connections_per_user.to_string(),
            "handshake_timeout" => format_duration(self.handshake_timeout),
            "idle_timeout" => format_duration(self.idle_timeout),
            "running_per_user" => self.running_per_user.to_string(),
            "jobs_per_user" => self.jobs_per_user.to_string(),
            "output_per_user" => format_size(self.output_per_user),
            "changes_per_second" => self.changes_per_second.to_string(),
            "queries_per_user" => self.queries_per_user.to_string(),
            "journal_lines_per_second" => self.journal_lines_per_second.to_string(),
            "events_per_user" => self.events_per_user.to_string(),
            "max_output" => format_size(self.max_output),
            "keep_runs" => self.keep_runs.to_string(),
            "retention" => format_duration(self.retention),
            "min_interval" => format_duration(self.min_interval),
            "tasks_per_user" => self.tasks_per_user.to_string(),
            _ => "?".into(),
        }
    }

    /// Every limit, for `status`.
    pub fn infos(&self) -> Vec<chime_proto::LimitInfo> {
        SETTINGS
            .iter()
            .map(|setting| chime_proto::LimitInfo {
                setting: (*setting).into(),
                value: self.value(setting),
                source: if self.source.set.contains(setting) {
                    self.source.file.display().to_string()
                } else {
                    "default".into()
                },
            })
            .collect()
    }
}

/// The settings under `[limits]`, in the order `status` shows them.
pub const SETTINGS: [&str; 15] = [
    "connections_per_user",
    "handshake_timeout",
    "idle_timeout",
    "running_per_user",
    "jobs_per_user",
    "output_per_user",
    "changes_per_second",
    "queries_per_user",
    "journal_lines_per_second",
    "events_per_user",
    "max_output",
    "keep_runs",
    "retention",
    "min_interval",
    "tasks_per_user",
];

/// The limits in force, shared by the connections, the engine and the runner, and replaced by a
/// reload.
#[derive(Debug, Clone)]
pub struct LimitsCell(Arc<RwLock<Arc<Limits>>>);

impl LimitsCell {
    pub fn new(limits: Limits) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(limits))))
    }

    pub fn get(&self) -> Arc<Limits> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, limits: Limits) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits);
    }
}

/// Paces each user's changes: a burst of up to a second's worth at once, then
/// `changes_per_second` (the generic cell rate algorithm). A change beyond that waits its turn
/// rather than being refused, as a pipe makes a fast writer wait, so a script that submits
/// thousands of jobs slows down instead of failing, and the engine's commits stay shared.
#[derive(Debug, Default)]
pub struct Pace {
    /// Per user: the theoretical time the next change may go.
    next: Mutex<HashMap<u32, Instant>>,
}

impl Pace {
    /// How long `uid`'s next change must wait at `rate` changes per second, reserving its turn.
    /// Up to a second's worth may run ahead of the rate.
    pub fn reserve(&self, uid: u32, rate: u32, now: Instant) -> Duration {
        let burst = Duration::from_secs(1);
        self.turn(uid, rate, now, |_| true)
            .saturating_duration_since(now + burst)
    }

    /// Takes a turn for `uid` at `rate` per second with `burst` of slack, if one is free now:
    /// for what is dropped rather than delayed (journal lines).
    pub fn try_take(&self, uid: u32, rate: u32, burst: Duration, now: Instant) -> bool {
        let mut taken = false;
        self.turn(uid, rate, now, |start| {
            taken = start <= now + burst;
            taken
        });
        taken
    }

    /// `uid`'s next turn at `rate` per second (not before `now`), reserved when `take` says so
    /// (the turn after it then comes one interval later).
    fn turn(
        &self,
        uid: u32,
        rate: u32,
        now: Instant,
        take: impl FnOnce(Instant) -> bool,
    ) -> Instant {
        let interval = Duration::from_secs(1) / rate.max(1);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.len() > 4096 {
            // Users who have been quiet for a while owe nothing.
            next.retain(|_, at| *at > now);
        }
        let at = next.entry(uid).or_insert(now);
        let start = (*at).max(now);
        if take(start) {
            *at = start + interval;
        }
        start
    }
}

/// At most so many of something at once per user: a semaphore per user, made on first use.
#[derive(Debug, Default)]
pub struct Turns {
    per_uid: Mutex<HashMap<u32, (u32, Arc<tokio::sync::Semaphore>)>>,
}

impl Turns {
    /// Waits until `uid` has fewer than `most` turns out, and takes one (given back on drop).
    pub async fn take(&self, uid: u32, most: u32) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut per_uid = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
            if per_uid.len() > 4096 {
                // Users with no turn out.
                per_uid.retain(|_, (_, s)| Arc::strong_count(s) > 1);
            }
            let entry = per_uid
                .entry(uid)
                .or_insert_with(|| (most, Arc::new(tokio::sync::Semaphore::new(most as usize))));
            if entry.0 != most {
                // A reload changed the limit: turns out on the old one run their course.
                *entry = (most, Arc::new(tokio::sync::Semaphore::new(most as usize)));
            }
            Arc::clone(&entry.1)
        };
        semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let pace = Pace::default();
        let now = Instant::now();
        // 10 per second: the first second's worth goes at once.
        let waits: Vec<Duration> = (0..15).map(|_| pace.reserve(7, 10, now)).collect();
        assert!(waits[..11].iter().all(|w| w.is_zero()), "{waits:?}");
        assert_eq!(waits[11], Duration::from_millis(100));
        assert_eq!(waits[14], Duration::from_millis(400));
        // Another user is not held up.
        assert!(pace.reserve(8, 10, now).is_zero());
        // After a quiet while, a new burst.
        assert!(pace.reserve(7, 10, now + Duration::from_secs(5)).is_zero());
    }

    #[tokio::test]
    async fn turns_are_per_user() {
        let turns = Turns::default();
        let a = turns.take(1, 2).await;
        let _b = turns.take(1, 2).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), turns.take(1, 2)).await;
        assert!(waiting.is_err(), "a third turn of user 1 waits");
        let _other = turns.take(2, 2).await;
        drop(a);
        let _c = turns.take(1, 2).await;
    }

    #[test]
    fn dropped_turns_do_not_pile_up() {
        let pace = Pace::default();
        let now = Instant::now();
        let burst = Duration::from_secs(1);
        let taken = (0..30).filter(|_| pace.try_take(1, 10, burst, now)).count();
        assert_eq!(taken, 11, "a second's worth and the first");
        // A refused turn costs nothing: half a second later, five more.
        let later = now + Duration::from_millis(500);
        assert_eq!(
            (0..30)
                .filter(|_| pace.try_take(1, 10, burst, later))
                .count(),
            5
        );
    }

    #[test]
    fn refusals_say_the_limit_its_value_and_where() {
        let settings = Settings {
            jobs_per_user: Some(3),
            ..Settings::default()
        };
        let limits = Limits::resolve(&settings, "/etc/chime/chimed.toml".into(), 64, 100_000, 0);
        assert_eq!(
            limits.said("jobs_per_user"),
            "jobs_per_user = 3, set under [limits] in /etc/chime/chimed.toml"
        );
        assert_eq!(
            limits.said("running_per_user"),
            "running_per_user = 16, the default; set it under [limits] in /etc/chime/chimed.toml"
        );
        assert_eq!(limits.value("output_per_user"), "1GiB");
        assert_eq!(limits.tasks_per_user, 4096);
        assert_eq!(
            limits.said("tasks_per_user"),
            "tasks_per_user = 4096, the default; set it under [limits] in /etc/chime/chimed.toml"
        );
        assert!(limits.is_exempt(0));
        assert_eq!(limits.running_cap(1000), Some(16));
        assert_eq!(limits.running_cap(0), None);
    }
}
