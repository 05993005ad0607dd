//! The fields of a job spec, as a type. A refused spec names the field it is about
//! ([`ErrorReply::field`](crate::ErrorReply::field)), never in its text: `chimectl` shows the
//! field as its option (`--every`), a job file as its key and line (`jobs.d/x.toml:3: every:`),
//! and scripts read it from `--json`. The rules themselves are chimed's, in one place
//! (`chime_daemon::spec`); this crate only names what they are about.

use serde::{Deserialize, Serialize};

/// A field of [`crate::JobSpec`] or [`crate::ExecSpec`] (new ones are appended: see the crate
/// docs on evolving the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpecField {
    Name,
    Command,
    Cwd,
    Env,
    At,
    In,
    Every,
    From,
    Cron,
    Tz,
    Count,
    Until,
    CatchUp,
    CatchUpLimit,
    Deadline,
    Overlap,
    Queue,
    Replace,
    Retries,
    Backoff,
    RetryOn,
    Timeout,
    KillGrace,
    MaxOutput,
    KeepRuns,
    Retention,
    MemoryMax,
    CpuQuota,
    TasksMax,
    IoWeight,
    KeepChildren,
}

impl SpecField {
    pub const ALL: [Self; 31] = [
        Self::Name,
        Self::Command,
        Self::Cwd,
        Self::Env,
        Self::At,
        Self::In,
        Self::Every,
        Self::From,
        Self::Cron,
        Self::Tz,
        Self::Count,
        Self::Until,
        Self::CatchUp,
        Self::CatchUpLimit,
        Self::Deadline,
        Self::Overlap,
        Self::Queue,
        Self::Replace,
        Self::Retries,
        Self::Backoff,
        Self::RetryOn,
        Self::Timeout,
        Self::KillGrace,
        Self::MaxOutput,
        Self::KeepRuns,
        Self::Retention,
        Self::MemoryMax,
        Self::CpuQuota,
        Self::TasksMax,
        Self::IoWeight,
        Self::KeepChildren,
    ];

    /// Its key in a job file and in `--json` (`catch_up_limit`).
    pub const fn key(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Command => "command",
            Self::Cwd => "cwd",
            Self::Env => "env",
            Self::At => "at",
            Self::In => "in",
            Self::Every => "every",
            Self::From => "from",
            Self::Cron => "cron",
            Self::Tz => "tz",
            Self::Count => "count",
            Self::Until => "until",
            Self::CatchUp => "catch_up",
            Self::CatchUpLimit => "catch_up_limit",
            Self::Deadline => "deadline",
            Self::Overlap => "overlap",
            Self::Queue => "queue",
            Self::Replace => "replace",
            Self::Retries => "retries",
            Self::Backoff => "backoff",
            Self::RetryOn => "retry_on",
            Self::Timeout => "timeout",
            Self::KillGrace => "kill_grace",
            Self::MaxOutput => "max_output",
            Self::KeepRuns => "keep_runs",
            Self::Retention => "retention",
            Self::MemoryMax => "memory_max",
            Self::CpuQuota => "cpu_quota",
            Self::TasksMax => "tasks_max",
            Self::IoWeight => "io_weight",
            Self::KeepChildren => "keep_children",
        }
    }

    /// Its option of `chimectl add` (`--catch-up-limit`; the command is the words after the
    /// options, shown as `command`).
    pub fn flag(self) -> String {
        match self {
            Self::Command => "command".into(),
            other => format!("--{}", other.key().replace('_', "-")),
        }
    }

    /// The field whose job-file key is `key`.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_its_own_key_and_flag() {
        let keys: std::collections::HashSet<_> = SpecField::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys.len(), SpecField::ALL.len());
        for field in SpecField::ALL {
            assert_eq!(SpecField::from_key(field.key()), Some(field));
        }
        assert_eq!(SpecField::CatchUpLimit.flag(), "--catch-up-limit");
        assert_eq!(SpecField::Every.flag(), "--every");
        assert_eq!(SpecField::MemoryMax.flag(), "--memory-max");
        assert_eq!(SpecField::CpuQuota.key(), "cpu_quota");
    }
}
