//! Metrics in the Prometheus text format, produced with the prometheus-client crate.
//!
//! Two kinds of figures:
//!
//! - **Observed as they happen**, by the engine after each commit ([`Metrics::commit`],
//!   [`Metrics::event`]): runs by outcome (`oom_killed` among them), run durations, what runs
//!   cost (CPU time and peak memory, for runs whose end carries usage from their cgroup),
//!   schedule lateness (a run's start or a timer's firing minus its due time), timer fires,
//!   events, commit latency and batch size.
//! - **Read when asked** ([`Metrics::render`]): jobs by state and queue depths from the
//!   database's counters (never a scan), runs in progress, connections and event subscribers.
//!
//! `chimectl metrics` asks for them over the socket; `chimed --metrics-file PATH` rewrites a
//! file for node_exporter's textfile collector (written to a temporary file, then renamed, so
//! the collector never reads half a file).

use crate::store::{Store, StoreError};
use chime_proto::{EventKind, EventRecord, JobState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

/// Every metric chimed exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<OutcomeLabel, Counter>,
    run_duration: Histogram,
    run_cpu: Histogram,
    run_memory_peak: Histogram,
    lateness: Histogram,
    fires: Counter,
    events: Counter,
    commits: Counter,
    commit_latency: Histogram,
    commit_batch: Histogram,
    jobs: Family<StateLabel, Gauge>,
    running: Family<QueueLabel, Gauge>,
    waiting: Family<QueueLabel, Gauge>,
    connections: Gauge,
    watchers: Gauge,
    uptime: Gauge,
    database_bytes: Gauge,
    storage_fault: Gauge,
    disk_free: Gauge,
}

/// Registers metrics and hands them back: the registry keeps one handle of each, the caller
/// another, and both see the same figures.
struct Registrar(Registry);

impl Registrar {
    /// Registers `metric` as `name` (after the registry's `chime` prefix), described by `help`.
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// The same for a metric measured in `unit` (its name then ends with the unit's).
    fn add_in<M: Metric + Clone>(&mut self, unit: Unit, name: &str, help: &str, metric: M) -> M {
        self.0.register_with_unit(name, help, unit, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registrar(Registry::with_prefix("chime"));
        // Registered in the order of the text exposition.
        Self {
            runs: r.add("runs", "Runs ended, by outcome", Family::default()),
            run_duration: r.add_in(
                Unit::Seconds,
                "run_duration",
                "How long runs took, from start to end",
                Histogram::new(exponential_buckets(0.001, 2.0, 22)),
            ),
            run_cpu: r.add_in(
                Unit::Seconds,
                "run_cpu",
                "CPU time runs used, user and system, from their cgroups",
                // 1 ms to about 35 min.
                Histogram::new(exponential_buckets(0.001, 2.0, 22)),
            ),
            run_memory_peak: r.add_in(
                Unit::Bytes,
                "run_memory_peak",
                "The most memory runs held at once, from their cgroups",
                // 64 KiB to 64 GiB.
                Histogram::new(exponential_buckets(65_536.0, 2.0, 21)),
            ),
            lateness: r.add_in(
                Unit::Seconds,
                "schedule_lateness",
                "When a run started (or a timer fired) minus when it was due",
                Histogram::new(exponential_buckets(0.0005, 2.0, 20)),
            ),
            fires: r.add("timer_fires", "Timers fired", Counter::default()),
            events: r.add("events", "Events appended to the event log", Counter::default()),
            commits: r.add("commits", "Write transactions committed", Counter::default()),
            commit_latency: r.add_in(
                Unit::Seconds,
                "commit_latency",
                "Time to apply and durably commit one batch",
                Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            ),
            commit_batch: r.add(
                "commit_batch_size",
                "Changes carried by one commit",
                Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            ),
            jobs: r.add("jobs", "Jobs, by state", Family::default()),
            running: r.add("queue_running", "Runs in progress, by queue", Family::default()),
            waiting: r.add(
                "queue_waiting",
                "Jobs waiting for a slot in their queue or for it to resume",
                Family::default(),
            ),
            connections: r.add("connections", "Client connections open", Gauge::default()),
            watchers: r.add("event_subscribers", "Clients following the event log", Gauge::default()),
            uptime: r.add_in(Unit::Seconds, "uptime", "Time since chimed started", Gauge::default()),
            database_bytes: r.add_in(
                Unit::Bytes,
                "database_size",
                "Size of the database file",
                Gauge::default(),
            ),
            storage_fault: r.add(
                "storage_fault",
                "1 while commits to the database fail (the disk is full, or another I/O error), else 0",
                Gauge::default(),
            ),
            disk_free: r.add_in(
                Unit::Bytes,
                "disk_free",
                "Space free on the filesystem of the state directory",
                Gauge::default(),
            ),
            registry: r.0,
        }
    }

    /// One committed batch: how long it took and how many changes it carried.
    pub fn commit(&self, latency: Duration, changes: usize) {
        self.commits.inc();
        self.commit_latency.observe(latency.as_secs_f64());
        self.commit_batch.observe(changes as f64);
    }

    /// One committed event.
    pub fn event(&self, event: &EventRecord) {
        self.events.inc();
        match &event.kind {
            EventKind::Ended {
                outcome,
                duration_ms,
                usage,
                ..
            } => {
                let label = OutcomeLabel {
                    outcome: outcome.as_str().into(),
                };
                self.runs.get_or_create(&label).inc();
                self.run_duration.observe(*duration_ms as f64 / 1000.0);
                if let Some(usage) = usage {
                    let cpu_us = usage.cpu_user_us.saturating_add(usage.cpu_system_us);
                    self.run_cpu.observe(cpu_us as f64 / 1e6);
                    if let Some(peak) = usage.memory_peak_bytes {
                        self.run_memory_peak.observe(peak as f64);
                    }
                }
            }
            EventKind::Started { due_ms, .. } => {
                self.lateness
                    .observe(event.at_ms.saturating_sub(*due_ms).max(0) as f64 / 1000.0);
            }
            EventKind::Fired { due_ms, manual, .. } => {
                self.fires.inc();
                let label = OutcomeLabel {
                    outcome: "fired".into(),
                };
                self.runs.get_or_create(&label).inc();
                if !manual {
                    self.lateness
                        .observe(event.at_ms.saturating_sub(*due_ms).max(0) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }

    /// The text exposition, with the figures read at this moment: the database's counters from
    /// `store`, the rest from `now`. Blocks (reads the database).
    pub fn render(&self, store: &Store, now: &Readings) -> Result<String, StoreError> {
        let reader = store.read()?;
        self.jobs.clear();
        for (state, n) in reader.counts()? {
            let label = StateLabel {
                state: JobState::as_str(state).into(),
            };
            self.jobs.get_or_create(&label).set(n as i64);
        }
        self.waiting.clear();
        for (queue, n) in reader.waiting_queues()? {
            self.waiting
                .get_or_create(&QueueLabel { queue })
                .set(n as i64);
        }
        self.running.clear();
        for (queue, n) in &now.running {
            self.running
                .get_or_create(&QueueLabel {
                    queue: queue.clone(),
                })
                .set(*n as i64);
        }
        self.connections.set(i64::from(now.connections));
        self.watchers.set(now.watchers as i64);
        self.uptime.set(now.uptime.as_secs() as i64);
        let bytes = std::fs::metadata(store.path()).map_or(0, |m| m.len());
        self.database_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.storage_fault.set(i64::from(store.fault().is_some()));
        let free = crate::store::free_bytes(&now.state_dir).unwrap_or(0);
        self.disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        Ok(text)
    }
}

/// What [`Metrics::render`] reads from the rest of the daemon at the moment it is asked.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Runs in progress per queue.
    pub running: HashMap<String, usize>,
    /// Open connections.
    pub connections: u32,
    /// Event subscribers (`watch`).
    pub watchers: usize,
    pub uptime: Duration,
    /// Where the database is: its filesystem's free space is reported.
    pub state_dir: std::path::PathBuf,
}

/// Rewrites `path` with the metrics every `interval`, until the daemon stops. `render` produces
/// the text (it may block: it runs on a blocking thread).
pub async fn write_file_every(
    render: std::sync::Arc<dyn Fn() -> Result<String, StoreError> + Send + Sync>,
    path: std::path::PathBuf,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let render = std::sync::Arc::clone(&render);
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let text = render().map_err(|e| e.to_string())?;
            write_atomically(&target, text.as_bytes()).map_err(|e| e.to_string())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot write the metrics file")
            }
            Err(err) => tracing::warn!(error = %err, "writing the metrics file panicked"),
        }
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`. The temporary file
/// is created anew (`O_EXCL`, which never follows a symbolic link: the directory may be another
/// user's, such as node_exporter's) and readable by all, as metrics are meant to be.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    // The mode above is cut by chimed's umask (077).
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chime_proto::{JobId, Outcome, RunId, RunUsage};

    fn ended(outcome: Outcome, usage: Option<RunUsage>) -> EventRecord {
        EventRecord {
            seq: 1,
            at_ms: 1_000,
            job: Some(JobId(1)),
            name: None,
            owner: Some(1000),
            kind: EventKind::Ended {
                run: RunId(1),
                attempt: 1,
                outcome,
                duration_ms: 500,
                usage,
            },
            actor: None,
        }
    }

    fn rendered(metrics: &Metrics) -> String {
        let dir = tempfile::TempDir::new().unwrap();
        let store = crate::store::testutil::open(&dir);
        let readings = Readings {
            state_dir: dir.path().into(),
            ..Readings::default()
        };
        metrics.render(&store, &readings).unwrap()
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
    }

    #[test]
    fn runs_with_usage_are_observed_in_cpu_and_peak_memory() {
        let metrics = Metrics::new();
        metrics.event(&ended(
            Outcome::Exited(0),
            Some(RunUsage {
                cpu_user_us: 1_500_000,
                cpu_system_us: 500_000,
                memory_peak_bytes: Some(3 << 20),
                io_read_bytes: None,
                io_write_bytes: None,
            }),
        ));
        // CPU figures but no memory figure: counted in CPU only.
        metrics.event(&ended(
            Outcome::Exited(0),
            Some(RunUsage {
                cpu_user_us: 1_000,
                ..RunUsage::default()
            }),
        ));
        // No usage (no cgroup): counted in neither.
        metrics.event(&ended(Outcome::Exited(1), None));
        let text = rendered(&metrics);
        assert_eq!(
            line(&text, "chime_run_cpu_seconds_count "),
            "chime_run_cpu_seconds_count 2"
        );
        assert_eq!(
            line(&text, "chime_run_cpu_seconds_sum "),
            "chime_run_cpu_seconds_sum 2.001"
        );
        // 2 s is in the bucket of 2.048 s, not in that of 1.024 s; 1 ms is in both.
        assert_eq!(
            line(&text, "chime_run_cpu_seconds_bucket{le=\"1.024\"}"),
            "chime_run_cpu_seconds_bucket{le=\"1.024\"} 1"
        );
        assert_eq!(
            line(&text, "chime_run_cpu_seconds_bucket{le=\"2.048\"}"),
            "chime_run_cpu_seconds_bucket{le=\"2.048\"} 2"
        );
        assert_eq!(
            line(&text, "chime_run_memory_peak_bytes_count "),
            "chime_run_memory_peak_bytes_count 1"
        );
        assert_eq!(
            line(&text, "chime_run_memory_peak_bytes_sum "),
            "chime_run_memory_peak_bytes_sum 3145728.0"
        );
        assert_eq!(
            line(&text, "chime_run_duration_seconds_count "),
            "chime_run_duration_seconds_count 3",
            "every run's duration is observed, with usage or not"
        );
    }

    #[test]
    fn oom_killed_runs_are_counted_under_their_own_outcome() {
        let metrics = Metrics::new();
        metrics.event(&ended(Outcome::OomKilled, None));
        metrics.event(&ended(Outcome::OomKilled, None));
        metrics.event(&ended(Outcome::Signaled(9), None));
        let text = rendered(&metrics);
        assert_eq!(
            line(&text, "chime_runs_total{outcome=\"oom_killed\"}"),
            "chime_runs_total{outcome=\"oom_killed\"} 2"
        );
        assert_eq!(
            line(&text, "chime_runs_total{outcome=\"killed\"}"),
            "chime_runs_total{outcome=\"killed\"} 1"
        );
    }
}
