//! Job settings: `[defaults]` in `chimed.toml`, and the same keys in a job file (retries,
//! backoff, retry_on, timeout, kill_grace, max_output, keep_runs, retention, journal, the
//! resource limits memory_max, cpu_quota, tasks_max and io_weight, and keep_children). Each value
//! is read here; the rules the values must meet are [`crate::spec::resolve_exec`]'s, the same
//! that `chimectl add` meets, reported at the key's line. The resource limits are read the same
//! way under `[queues.NAME]` ([`RawResources`]).

use super::{FileError, Text};
use crate::cgroup::Controllers;
use crate::job::Exec;
use chime_proto::human::{parse_cpu_quota, parse_duration, parse_size};
use chime_proto::{ResourceLimits, RetryOn, SpecField};
use serde::Deserialize;
use toml::Spanned;

/// Job settings shared by `[defaults]` and job files.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub retries: Option<Spanned<i64>>,
    pub backoff: Option<Spanned<String>>,
    pub retry_on: Option<Spanned<Vec<String>>>,
    pub timeout: Option<Spanned<String>>,
    pub kill_grace: Option<Spanned<String>>,
    pub max_output: Option<Spanned<String>>,
    pub keep_runs: Option<Spanned<i64>>,
    pub retention: Option<Spanned<String>>,
    pub journal: Option<bool>,
    pub memory_max: Option<Spanned<String>>,
    pub cpu_quota: Option<Spanned<String>>,
    pub tasks_max: Option<Spanned<i64>>,
    pub io_weight: Option<Spanned<i64>>,
    pub keep_children: Option<bool>,
}

/// `[defaults]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDefaults {
    pub retries: Option<u32>,
    pub backoff: Option<(u64, Option<u64>)>,
    pub retry_on: Option<u8>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: Option<u64>,
    pub max_output: Option<u64>,
    pub keep_runs: Option<u32>,
    pub retention_ms: Option<u64>,
    pub journal: Option<bool>,
    pub limits: ResourceLimits,
    pub keep_children: Option<bool>,
}

impl JobDefaults {
    /// Applies `[defaults]` to `exec`, the defaults of new jobs: its limits are what a run gets
    /// when neither its job nor its queue sets one.
    pub fn apply_as_defaults(&self, exec: &mut Exec) {
        self.apply(exec);
        exec.default_limits = self.limits.or(&exec.default_limits);
    }

    /// Applies a job file's own settings to `exec` (chimed's defaults): its limits are the
    /// job's own, over its queue's.
    pub fn apply_as_job(&self, exec: &mut Exec) {
        self.apply(exec);
        exec.limits = self.limits.clone();
    }

    /// The settings every job has one of.
    fn apply(&self, exec: &mut Exec) {
        if let Some(retries) = self.retries {
            exec.retries = retries;
        }
        if let Some((base, max)) = self.backoff {
            exec.backoff_base_ms = base;
            exec.backoff_max_ms = max.unwrap_or(exec.backoff_max_ms.max(base));
        }
        if let Some(bits) = self.retry_on {
            exec.retry_on = bits;
        }
        if let Some(timeout) = self.timeout_ms {
            exec.timeout_ms = Some(timeout);
        }
        if let Some(grace) = self.kill_grace_ms {
            exec.kill_grace_ms = grace;
        }
        if let Some(max) = self.max_output {
            exec.max_output = max;
        }
        if let Some(keep) = self.keep_runs {
            exec.keep_runs = keep;
        }
        if let Some(retention) = self.retention_ms {
            exec.retention_ms = retention;
        }
        if let Some(journal) = self.journal {
            exec.journal = journal;
        }
        if let Some(keep) = self.keep_children {
            exec.keep_children = keep;
        }
    }
}

/// The four resource limits as a file writes them: under `[defaults]`, in a job file, or under
/// `[queues.NAME]` (each its own serde struct, since `deny_unknown_fields` cannot flatten).
#[derive(Debug, Clone, Copy)]
pub(super) struct RawResources<'a> {
    pub memory_max: &'a Option<Spanned<String>>,
    pub cpu_quota: &'a Option<Spanned<String>>,
    pub tasks_max: &'a Option<Spanned<i64>>,
    pub io_weight: &'a Option<Spanned<i64>>,
}

impl RawResources<'_> {
    /// Reads the values; their rules are [`crate::spec::check_limits`]'.
    pub fn read(&self, t: &Text<'_>) -> Result<ResourceLimits, FileError> {
        Ok(ResourceLimits {
            memory_max: self
                .memory_max
                .as_ref()
                .map(|s| parse_size(s.get_ref()).map_err(|e| t.error(s.span(), "memory_max", e)))
                .transpose()?,
            cpu_quota_pct: self
                .cpu_quota
                .as_ref()
                .map(|s| {
                    parse_cpu_quota(s.get_ref()).map_err(|e| t.error(s.span(), "cpu_quota", e))
                })
                .transpose()?,
            // Beyond the type is beyond the rule's range too: saturate, and let the rule say it.
            tasks_max: self
                .tasks_max
                .as_ref()
                .map(|v| {
                    not_negative(t, v, "tasks_max").map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                })
                .transpose()?,
            io_weight: self
                .io_weight
                .as_ref()
                .map(|v| {
                    not_negative(t, v, "io_weight").and_then(|n| {
                        u16::try_from(n).map_err(|_| {
                            t.error(
                                v.span(),
                                "io_weight",
                                format!("{n} is out of range; give 1 to 10000 (the kernel's default is 100)"),
                            )
                        })
                    })
                })
                .transpose()?,
        })
    }

    /// Reads the values and checks them, and with `host`, that this host can enforce them, each
    /// refusal at its key's line.
    pub fn check(
        &self,
        t: &Text<'_>,
        host: Option<&Controllers>,
    ) -> Result<ResourceLimits, FileError> {
        let limits = self.read(t)?;
        let placed = |e: crate::spec::SpecError| t.spec_error(self.span(e.field), e);
        crate::spec::check_limits(&limits).map_err(placed)?;
        if let Some(host) = host {
            crate::spec::check_host(&limits, host).map_err(placed)?;
        }
        Ok(limits)
    }

    /// Where the value of `field` is in the file, if it is one of these and there.
    pub fn span(&self, field: SpecField) -> Option<std::ops::Range<usize>> {
        match field {
            SpecField::MemoryMax => self.memory_max.as_ref().map(Spanned::span),
            SpecField::CpuQuota => self.cpu_quota.as_ref().map(Spanned::span),
            SpecField::TasksMax => self.tasks_max.as_ref().map(Spanned::span),
            SpecField::IoWeight => self.io_weight.as_ref().map(Spanned::span),
            _ => None,
        }
    }
}

/// An integer that may not be negative (how large it may be is a rule of [`crate::spec`]).
fn not_negative(t: &Text<'_>, v: &Spanned<i64>, field: &str) -> Result<u64, FileError> {
    let n = *v.get_ref();
    u64::try_from(n)
        .map_err(|_| t.error(v.span(), field, format!("{n} is negative; give 1 or more")))
}

/// Checks job settings (`[defaults]`, or the same keys in a job file): each value is read here,
/// the rules they must meet are [`crate::spec::resolve_exec`]'s, reported at their key's line.
/// With `host` (chimed's controllers), resource limits this host cannot enforce are refused too;
/// with `bounds` (a user's edit of their job), what a user's job may not ask for.
pub(super) fn job_settings(
    t: &Text<'_>,
    raw: &RawDefaults,
    host: Option<&Controllers>,
    bounds: Option<&crate::limits::Limits>,
) -> Result<JobDefaults, FileError> {
    let ms = |v: &Option<Spanned<String>>, field: &str| -> Result<Option<u64>, FileError> {
        v.as_ref()
            .map(|s| {
                parse_duration(s.get_ref())
                    .map_err(|e| t.error(s.span(), field, e))
                    .and_then(|d| {
                        u64::try_from(d.as_millis())
                            .map_err(|_| t.error(s.span(), field, "too long"))
                    })
            })
            .transpose()
    };
    let backoff = raw.backoff.as_ref().map(|s| backoff(t, s)).transpose()?;
    let retry_on = raw
        .retry_on
        .as_ref()
        .map(|s| {
            s.get_ref()
                .iter()
                .map(|word| {
                    RetryOn::from_word(word).ok_or_else(|| {
                        t.error(
                            s.span(),
                            "retry_on",
                            format!(
                                "{word:?}: use exit, killed, timed_out, lost, interrupted or spawn_error"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let max_output = raw
        .max_output
        .as_ref()
        .map(|s| parse_size(s.get_ref()).map_err(|e| t.error(s.span(), "max_output", e)))
        .transpose()?;
    let count = |v: &Option<Spanned<i64>>, field: &str| {
        v.as_ref().map(|v| unsigned(t, v, field)).transpose()
    };
    let spec = chime_proto::ExecSpec {
        retries: count(&raw.retries, "retries")?,
        backoff_base_ms: backoff.map(|(base, _)| base),
        backoff_max_ms: backoff.and_then(|(_, max)| max),
        retry_on,
        timeout_ms: ms(&raw.timeout, "timeout")?,
        kill_grace_ms: ms(&raw.kill_grace, "kill_grace")?,
        max_output,
        keep_runs: count(&raw.keep_runs, "keep_runs")?,
        retention_ms: ms(&raw.retention, "retention")?,
        limits: raw.resources().check(t, host)?,
        keep_children: raw.keep_children,
    };
    crate::spec::resolve_exec(&spec, &Exec::default(), bounds)
        .map_err(|e| t.spec_error(raw.span(e.field), e))?;
    Ok(JobDefaults {
        retries: spec.retries,
        backoff,
        retry_on: spec.retry_on.map(|kinds| {
            kinds
                .iter()
                .fold(0u8, |bits, kind| bits | Exec::retry_bit(*kind))
        }),
        timeout_ms: spec.timeout_ms,
        kill_grace_ms: spec.kill_grace_ms,
        max_output,
        keep_runs: spec.keep_runs,
        retention_ms: spec.retention_ms,
        journal: raw.journal,
        limits: spec.limits,
        keep_children: raw.keep_children,
    })
}

/// A count, as a `u32` (how large it may be is a rule of [`crate::spec`]).
pub(super) fn unsigned(t: &Text<'_>, v: &Spanned<i64>, field: &str) -> Result<u32, FileError> {
    let n = *v.get_ref();
    if n < 0 {
        return Err(t.error(v.span(), field, format!("{n} is negative; give 0 or more")));
    }
    u32::try_from(n).map_err(|_| {
        t.error(
            v.span(),
            field,
            format!("{n} is too large; give at most {}", u32::MAX),
        )
    })
}

/// `backoff = "BASE"` or `"BASE:MAX"`, read.
fn backoff(t: &Text<'_>, s: &Spanned<String>) -> Result<(u64, Option<u64>), FileError> {
    let text = s.get_ref();
    let (base, max) = match text.split_once(':') {
        Some((base, max)) => (base, Some(max)),
        None => (text.as_str(), None),
    };
    let parse = |part: &str| {
        parse_duration(part)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| t.error(s.span(), "backoff", e))
    };
    Ok((parse(base)?, max.map(parse).transpose()?))
}

impl RawDefaults {
    fn resources(&self) -> RawResources<'_> {
        RawResources {
            memory_max: &self.memory_max,
            cpu_quota: &self.cpu_quota,
            tasks_max: &self.tasks_max,
            io_weight: &self.io_weight,
        }
    }

    /// Where the value of `field` is in the file, if it is there.
    fn span(&self, field: SpecField) -> Option<std::ops::Range<usize>> {
        let of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        match field {
            SpecField::Retries => self.retries.as_ref().map(Spanned::span),
            SpecField::KeepRuns => self.keep_runs.as_ref().map(Spanned::span),
            SpecField::RetryOn => self.retry_on.as_ref().map(Spanned::span),
            SpecField::Backoff => of(&self.backoff),
            SpecField::Timeout => of(&self.timeout),
            SpecField::KillGrace => of(&self.kill_grace),
            SpecField::MaxOutput => of(&self.max_output),
            SpecField::Retention => of(&self.retention),
            SpecField::MemoryMax
            | SpecField::CpuQuota
            | SpecField::TasksMax
            | SpecField::IoWeight => self.resources().span(field),
            _ => None,
        }
    }
}
