//! The rules of a job's execution settings (retries, backoff, retry_on, timeout, kill_grace,
//! max_output, keep_runs, retention, the resource limits and keep_children) and chimed's
//! defaults for those a job leaves out; for a user's job, also the administrator's bounds
//! ([`crate::limits::Limits`]).
//!
//! Resource limits have two rules: their values ([`check_limits`]: the same for a job, a queue
//! and `[defaults]`) and the host ([`check_host`]: a limit needs its cgroup v2 controller in
//! chimed's subtree, which only the running daemon knows, so callers that have it ask).

use super::{DAY_MS, SpecResult, bad};
use crate::cgroup::Controllers;
use crate::job::Exec;
use crate::limits::Limits;
use chime_proto::human::{format_duration, format_size};
use chime_proto::{ExecSpec, ResourceLimits, SpecField};
use std::time::Duration;

/// The least `memory_max`: below a mebibyte not even a shell starts.
pub const MEMORY_MAX_LEAST: u64 = 1 << 20;

/// The most `memory_max`: a pebibyte, far beyond any host, so that only a slip is refused.
pub const MEMORY_MAX_MOST: u64 = 1 << 50;

/// The most `cpu_quota`: 100 CPUs.
pub const CPU_QUOTA_MOST_PCT: u32 = 10_000;

/// The most `tasks_max`: the kernel's own most processes (`PID_MAX_LIMIT` on 64-bit).
pub const TASKS_MAX_MOST: u32 = 4_194_304;

/// The most `io_weight`, as the kernel's `io.weight` (whose least is 1).
pub const IO_WEIGHT_MOST: u16 = 10_000;

/// The most retries a job may ask for.
const RETRIES_MAX: u32 = 1000;

/// The most runs a job may keep.
const KEEP_RUNS_MAX: u32 = 1_000_000;

/// Checks an execution spec and fills in chimed's defaults. With `bounds` (a user's job), a job
/// may keep at most the administrator's `max_output`, `keep_runs` and `retention`: more is
/// refused when asked for, and a default above them is lowered to them.
pub fn resolve_exec(spec: &ExecSpec, defaults: &Exec, bounds: Option<&Limits>) -> SpecResult<Exec> {
    if spec.retries.is_some_and(|r| r > RETRIES_MAX) {
        return bad(SpecField::Retries, format!("must be at most {RETRIES_MAX}"));
    }
    let base = spec.backoff_base_ms.unwrap_or(defaults.backoff_base_ms);
    let max = spec
        .backoff_max_ms
        .unwrap_or(defaults.backoff_max_ms.max(base));
    if base == 0 {
        return bad(
            SpecField::Backoff,
            "the first delay must be longer than zero",
        );
    }
    if max < base {
        return bad(SpecField::Backoff, "MAX must not be shorter than BASE");
    }
    if max > 366 * DAY_MS {
        return bad(
            SpecField::Backoff,
            "the longest delay may be at most a year",
        );
    }
    if spec.timeout_ms == Some(0) {
        return bad(SpecField::Timeout, "must be longer than zero");
    }
    if spec.kill_grace_ms.is_some_and(|g| g > DAY_MS) {
        return bad(SpecField::KillGrace, "may be at most a day");
    }
    if spec.max_output.is_some_and(|m| m < 1024) {
        return bad(SpecField::MaxOutput, "must be at least 1K");
    }
    if spec.keep_runs == Some(0) {
        return bad(SpecField::KeepRuns, "must be at least 1");
    }
    if spec.keep_runs.is_some_and(|k| k > KEEP_RUNS_MAX) {
        return bad(
            SpecField::KeepRuns,
            format!("may be at most {KEEP_RUNS_MAX}"),
        );
    }
    check_limits(&spec.limits)?;
    let retry_on = match &spec.retry_on {
        None => defaults.retry_on,
        Some(kinds) if kinds.is_empty() => {
            return bad(SpecField::RetryOn, "needs at least one outcome");
        }
        Some(kinds) => kinds.iter().fold(0, |bits, k| bits | Exec::retry_bit(*k)),
    };
    let mut exec = Exec {
        retries: spec.retries.unwrap_or(defaults.retries),
        backoff_base_ms: base,
        backoff_max_ms: max,
        retry_on,
        timeout_ms: spec.timeout_ms.or(defaults.timeout_ms),
        kill_grace_ms: spec.kill_grace_ms.unwrap_or(defaults.kill_grace_ms),
        max_output: spec.max_output.unwrap_or(defaults.max_output),
        keep_runs: spec.keep_runs.unwrap_or(defaults.keep_runs),
        retention_ms: spec.retention_ms.unwrap_or(defaults.retention_ms),
        journal: defaults.journal,
        limits: spec.limits.clone(),
        default_limits: defaults.default_limits.clone(),
        keep_children: spec.keep_children.unwrap_or(defaults.keep_children),
    };
    if let Some(limits) = bounds {
        bound_exec(spec, &mut exec, limits)?;
    }
    Ok(exec)
}

/// Holds a user's job to the administrator's limits: more than they allow is refused when asked
/// for, and a default above them is lowered to them.
fn bound_exec(spec: &ExecSpec, exec: &mut Exec, limits: &Limits) -> SpecResult {
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    // Retries are occurrences too: they come no faster than a recurring job may.
    let least_ms = ms(limits.min_interval);
    if spec.backoff_base_ms.is_some_and(|b| b < least_ms) {
        return bad(
            SpecField::Backoff,
            format!(
                "a user's retries may come at most every {} ({})",
                format_duration(limits.min_interval),
                limits.said("min_interval")
            ),
        );
    }
    if spec.max_output.is_some_and(|m| m > limits.max_output) {
        return bad(
            SpecField::MaxOutput,
            format!(
                "a user's job may keep at most {} of output per run ({})",
                format_size(limits.max_output),
                limits.said("max_output")
            ),
        );
    }
    if spec.keep_runs.is_some_and(|k| k > limits.keep_runs) {
        return bad(
            SpecField::KeepRuns,
            format!(
                "a user's job may keep at most {} runs ({})",
                limits.keep_runs,
                limits.said("keep_runs")
            ),
        );
    }
    let most_ms = ms(limits.retention);
    if spec.retention_ms.is_some_and(|r| r > most_ms) {
        return bad(
            SpecField::Retention,
            format!(
                "a user's job may be kept at most {} after it finished ({})",
                format_duration(limits.retention),
                limits.said("retention")
            ),
        );
    }
    lower_to(exec, limits);
    Ok(())
}

/// Lowers the settings of `exec` that a user's job may have at most so much of (and raises its
/// backoff to a user's least) to `limits`. What a user asked for within them is left as it is,
/// so this applies to all of a resolved `exec` whose asked-for values were checked.
pub fn lower_to(exec: &mut Exec, limits: &Limits) {
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    exec.backoff_base_ms = exec.backoff_base_ms.max(ms(limits.min_interval));
    exec.backoff_max_ms = exec.backoff_max_ms.max(exec.backoff_base_ms);
    exec.max_output = exec.max_output.min(limits.max_output);
    exec.keep_runs = exec.keep_runs.min(limits.keep_runs);
    exec.retention_ms = exec.retention_ms.min(ms(limits.retention));
}

/// Checks resource limits (a job's, a queue's or `[defaults]`'): memory from 1M to 1024T, a CPU
/// quota from 1% to 10000% (100 CPUs), tasks from 1 to 4194304, an I/O weight from 1 to 10000.
pub fn check_limits(limits: &ResourceLimits) -> SpecResult {
    if let Some(bytes) = limits.memory_max
        && !(MEMORY_MAX_LEAST..=MEMORY_MAX_MOST).contains(&bytes)
    {
        return bad(
            SpecField::MemoryMax,
            format!(
                "{} is out of range; give 1M to 1024T (bytes, or K, M, G, T: powers of 1024)",
                format_size(bytes)
            ),
        );
    }
    if let Some(pct) = limits.cpu_quota_pct
        && !(1..=CPU_QUOTA_MOST_PCT).contains(&pct)
    {
        return bad(
            SpecField::CpuQuota,
            format!(
                "{pct}% is out of range; give 1% to {CPU_QUOTA_MOST_PCT}% of one CPU (100% is one whole CPU, 200% two)"
            ),
        );
    }
    if let Some(tasks) = limits.tasks_max
        && !(1..=TASKS_MAX_MOST).contains(&tasks)
    {
        return bad(
            SpecField::TasksMax,
            format!("{tasks} is out of range; give 1 to {TASKS_MAX_MOST} processes and threads"),
        );
    }
    if let Some(weight) = limits.io_weight
        && !(1..=IO_WEIGHT_MOST).contains(&weight)
    {
        return bad(
            SpecField::IoWeight,
            format!(
                "{weight} is out of range; give 1 to {IO_WEIGHT_MOST} (the kernel's default is 100)"
            ),
        );
    }
    Ok(())
}

/// Checks that this host can enforce `limits`: each needs its cgroup v2 controller in the
/// cgroups chimed makes for runs (`memory_max` memory, `cpu_quota` cpu, `tasks_max` pids,
/// `io_weight` io). A limit that cannot be enforced is refused rather than ignored.
pub fn check_host(limits: &ResourceLimits, host: &Controllers) -> SpecResult {
    let needs = [
        (
            SpecField::MemoryMax,
            limits.memory_max.is_some(),
            "memory",
            host.memory,
        ),
        (
            SpecField::CpuQuota,
            limits.cpu_quota_pct.is_some(),
            "cpu",
            host.cpu,
        ),
        (
            SpecField::TasksMax,
            limits.tasks_max.is_some(),
            "pids",
            host.pids,
        ),
        (
            SpecField::IoWeight,
            limits.io_weight.is_some(),
            "io",
            host.io,
        ),
    ];
    for (field, given, controller, present) in needs {
        if given && !present {
            let has = match host.names() {
                names if names.is_empty() => "it has none".to_owned(),
                names => format!("it has: {}", names.join(", ")),
            };
            return bad(
                field,
                format!(
                    "needs the cgroup v2 {controller:?} controller, which chimed's cgroup does not have on this host ({has}); see README \"Containment\""
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(limits: ResourceLimits) -> (SpecField, String) {
        let e = check_limits(&limits).expect_err("refused");
        (e.field, e.message)
    }

    #[test]
    fn memory_max_is_at_least_a_mebibyte() {
        let memory = |m| ResourceLimits {
            memory_max: Some(m),
            ..ResourceLimits::default()
        };
        assert!(check_limits(&memory(1 << 20)).is_ok());
        assert!(check_limits(&memory(1 << 50)).is_ok());
        let (field, message) = refused(memory(512 << 10));
        assert_eq!(field, SpecField::MemoryMax);
        assert!(
            message.starts_with("512KiB is out of range; give 1M to 1024T"),
            "{message}"
        );
        assert_eq!(refused(memory((1 << 50) + 1)).0, SpecField::MemoryMax);
    }

    #[test]
    fn cpu_quota_is_a_percent_of_one_cpu_up_to_a_hundred_cpus() {
        let cpu = |c| ResourceLimits {
            cpu_quota_pct: Some(c),
            ..ResourceLimits::default()
        };
        assert!(check_limits(&cpu(1)).is_ok());
        assert!(check_limits(&cpu(10_000)).is_ok());
        let (field, message) = refused(cpu(0));
        assert_eq!(field, SpecField::CpuQuota);
        assert!(
            message.starts_with("0% is out of range; give 1% to 10000%"),
            "{message}"
        );
        assert_eq!(refused(cpu(10_001)).0, SpecField::CpuQuota);
    }

    #[test]
    fn tasks_max_is_at_least_one() {
        let tasks = |t| ResourceLimits {
            tasks_max: Some(t),
            ..ResourceLimits::default()
        };
        assert!(check_limits(&tasks(1)).is_ok());
        assert!(check_limits(&tasks(TASKS_MAX_MOST)).is_ok());
        let (field, message) = refused(tasks(0));
        assert_eq!(field, SpecField::TasksMax);
        assert!(
            message.starts_with("0 is out of range; give 1 to 4194304"),
            "{message}"
        );
        assert_eq!(refused(tasks(TASKS_MAX_MOST + 1)).0, SpecField::TasksMax);
    }

    #[test]
    fn io_weight_is_the_kernels_range() {
        let io = |w| ResourceLimits {
            io_weight: Some(w),
            ..ResourceLimits::default()
        };
        assert!(check_limits(&io(1)).is_ok());
        assert!(check_limits(&io(10_000)).is_ok());
        let (field, message) = refused(io(0));
        assert_eq!(field, SpecField::IoWeight);
        assert!(
            message.starts_with("0 is out of range; give 1 to 10000"),
            "{message}"
        );
        assert_eq!(refused(io(10_001)).0, SpecField::IoWeight);
    }

    #[test]
    fn a_submission_is_held_to_the_same_rules() {
        let spec = ExecSpec {
            limits: ResourceLimits {
                tasks_max: Some(0),
                ..ResourceLimits::default()
            },
            ..ExecSpec::default()
        };
        let e = resolve_exec(&spec, &Exec::default(), None).expect_err("refused");
        assert_eq!(e.field, SpecField::TasksMax);
    }

    #[test]
    fn a_limit_needs_its_controller_on_the_host() {
        let all = ResourceLimits {
            memory_max: Some(64 << 20),
            cpu_quota_pct: Some(50),
            tasks_max: Some(64),
            io_weight: Some(200),
        };
        let every = Controllers {
            cpu: true,
            memory: true,
            pids: true,
            io: true,
        };
        assert!(check_host(&all, &every).is_ok());
        assert!(check_host(&ResourceLimits::default(), &Controllers::default()).is_ok());
        let e = check_host(&all, &Controllers::default()).expect_err("none to enforce it");
        assert_eq!(e.field, SpecField::MemoryMax);
        assert_eq!(
            e.message,
            "needs the cgroup v2 \"memory\" controller, which chimed's cgroup does not have on this host (it has none); see README \"Containment\""
        );
        let some = Controllers {
            cpu: true,
            io: true,
            ..Controllers::default()
        };
        let e = check_host(&all, &some).expect_err("no memory controller");
        assert!(e.message.contains("(it has: cpu, io)"), "{}", e.message);
        for (field, without) in [
            (
                SpecField::CpuQuota,
                Controllers {
                    cpu: false,
                    ..every
                },
            ),
            (
                SpecField::TasksMax,
                Controllers {
                    pids: false,
                    ..every
                },
            ),
            (SpecField::IoWeight, Controllers { io: false, ..every }),
        ] {
            assert_eq!(
                check_host(&all, &without).expect_err("refused").field,
                field
            );
        }
    }

    #[test]
    fn a_run_takes_the_jobs_limits_then_the_queues_then_the_defaults() {
        let exec = Exec {
            limits: ResourceLimits {
                memory_max: Some(1 << 30),
                ..ResourceLimits::default()
            },
            default_limits: ResourceLimits {
                memory_max: Some(2 << 30),
                cpu_quota_pct: Some(100),
                tasks_max: Some(64),
                ..ResourceLimits::default()
            },
            ..Exec::default()
        };
        let queue = ResourceLimits {
            memory_max: Some(4 << 30),
            cpu_quota_pct: Some(50),
            ..ResourceLimits::default()
        };
        assert_eq!(
            exec.run_limits(&queue),
            ResourceLimits {
                memory_max: Some(1 << 30),
                cpu_quota_pct: Some(50),
                tasks_max: Some(64),
                io_weight: None,
            }
        );
    }

    #[test]
    fn keep_children_is_the_jobs_else_the_default() {
        let defaults = Exec {
            keep_children: true,
            ..Exec::default()
        };
        let own = |k| ExecSpec {
            keep_children: k,
            ..ExecSpec::default()
        };
        assert!(
            resolve_exec(&own(None), &defaults, None)
                .unwrap()
                .keep_children
        );
        assert!(
            !resolve_exec(&own(Some(false)), &defaults, None)
                .unwrap()
                .keep_children
        );
        assert!(
            resolve_exec(&own(Some(true)), &Exec::default(), None)
                .unwrap()
                .keep_children
        );
    }
}
