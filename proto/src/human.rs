//! What people type and read, shared by `chimed` and `chimectl` so that both agree: default
//! paths, durations and instants.

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp, ZonedDateTime, civil, tz::TimeZone};
use std::path::PathBuf;
use std::time::Duration;

/// The socket, state directory and configuration file a daemon uses when none are given, and a
/// client looks for.
///
/// As root: `/run/chime/chimed.sock`, `/var/lib/chime` and `/etc/chime/chimed.toml`. Otherwise
/// `$XDG_RUNTIME_DIR/chime/chimed.sock` (else `/run/user/UID/chime/chimed.sock` when that
/// directory exists, else `/tmp/chime-UID/chimed.sock`), `$XDG_STATE_HOME/chime` (else
/// `$HOME/.local/state/chime`) and `$XDG_CONFIG_HOME/chime/chimed.toml` (else
/// `$HOME/.config/chime/chimed.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPaths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
}

impl DefaultPaths {
    /// Defaults for `uid`, reading the environment through `var`.
    pub fn for_user(uid: u32, var: impl Fn(&str) -> Option<String>) -> Self {
        if uid == 0 {
            return Self {
                socket: PathBuf::from("/run/chime/chimed.sock"),
                state_dir: PathBuf::from("/var/lib/chime"),
                config: PathBuf::from("/etc/chime/chimed.toml"),
            };
        }
        let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let runtime = absolute("XDG_RUNTIME_DIR")
            .or_else(|| {
                let run_user = PathBuf::from(format!("/run/user/{uid}"));
                run_user.is_dir().then_some(run_user)
            })
            .map(|dir| dir.join("chime"))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/chime-{uid}")));
        let state = absolute("XDG_STATE_HOME")
            .or_else(|| absolute("HOME").map(|home| home.join(".local/state")))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/chime-{uid}/state")))
            .join("chime");
        let config = absolute("XDG_CONFIG_HOME")
            .or_else(|| absolute("HOME").map(|home| home.join(".config")))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/chime-{uid}/config")))
            .join("chime/chimed.toml");
        Self {
            socket: runtime.join("chimed.sock"),
            state_dir: state,
            config,
        }
    }
}

/// Parses a duration such as `90s`, `5m`, `1h30m`, `2 days`, `500ms` or ISO 8601 `PT1H`.
/// Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // Days and weeks are 24 hours and 7 days here: a delay is elapsed time, not calendar time.
    let signed: SignedDuration = match text.parse::<SignedDuration>() {
        Ok(duration) => duration,
        Err(_) => text
            .parse::<Span>()
            .and_then(|span| span.to_duration(SpanRelativeTo::days_are_24_hours()))
            .map_err(|e| {
                format!("{text:?} is not a duration ({e}); use forms like 90s, 5m, 1h30m or 2d")
            })?,
    };
    if signed.is_negative() {
        return Err(format!(
            "{text:?} is negative; give a duration of zero or more"
        ));
    }
    signed
        .try_into()
        .map_err(|e| format!("{text:?} is out of range: {e}"))
}

/// Parses a size such as `8MiB`, `512K`, `1G` or `1000` (bytes). Units are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; use forms like 8MiB, 512K or 1G"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use K, M or G")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats a duration for people: `1h30m`, `90ms`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut secs = duration.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses an instant: RFC 3339 (`2026-11-25T10:00:00Z`, `2026-11-25T10:00:00+01:00`), or local
/// civil time `YYYY-MM-DD HH:MM[:SS]` (also with `T`) in `tz`.
///
/// A local time that does not exist (skipped by a DST change) resolves to the same distance
/// after the gap; a local time that occurs twice (a DST fold) resolves to its first occurrence.
/// This is jiff's "compatible" rule, the one `date` and most tools use.
pub fn parse_instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(zoned) = text.parse::<ZonedDateTime>() {
        return Ok(zoned.timestamp());
    }
    let civil: civil::DateTime = text.parse().map_err(|_| {
        format!(
            "{text:?} is not a time; use RFC 3339 (2026-11-25T14:30:00Z) or local time (2026-11-25 14:30)"
        )
    })?;
    tz.to_ambiguous_zoned_datetime(civil)
        .compatible()
        .map(|z| z.timestamp())
        .map_err(|e| format!("{text:?} cannot be placed in the local time zone: {e}"))
}

/// Formats an instant in `tz` for tables: `2026-11-25 14:30:00 +01:00`.
pub fn format_instant(ms: i64, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        Err(_) => format!("@{ms}ms"),
    }
}

/// Formats an instant as RFC 3339 in UTC with milliseconds, for `--json`.
pub fn rfc3339(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_write() {
        for (text, secs) in [
            ("90s", 90),
            ("5m", 300),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes_people_write() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn instants_people_write() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let utc = parse_instant("2026-11-25T10:00:00Z", &tz).unwrap();
        assert_eq!(parse_instant("2026-11-25 11:00", &tz).unwrap(), utc);
        assert_eq!(parse_instant("2026-11-25 11:00:00", &tz).unwrap(), utc);
        assert_eq!(
            parse_instant("2026-11-25T12:00:00+02:00", &tz).unwrap(),
            utc
        );
        // 02:30 does not exist on 2026-03-29 in Paris: compatible resolves after the gap.
        let gap = parse_instant("2026-03-29 02:30", &tz).unwrap();
        assert_eq!(gap, parse_instant("2026-03-29T01:30:00Z", &tz).unwrap());
        // 02:30 happens twice on 2026-10-25: the first one (+02:00).
        let fold = parse_instant("2026-10-25 02:30", &tz).unwrap();
        assert_eq!(fold, parse_instant("2026-10-25T00:30:00Z", &tz).unwrap());
        assert!(parse_instant("tomorrow", &tz).is_err());
        assert_eq!(rfc3339(utc.as_millisecond()), "2026-11-25T10:00:00.000Z");
    }

    #[test]
    fn default_paths() {
        let root = DefaultPaths::for_user(0, |_| None);
        assert_eq!(root.socket, PathBuf::from("/run/chime/chimed.sock"));
        let env = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".to_string()),
            "HOME" => Some("/home/ann".to_string()),
            _ => None,
        };
        let user = DefaultPaths::for_user(1000, env);
        assert_eq!(
            user.socket,
            PathBuf::from("/run/user/1000/chime/chimed.sock")
        );
        assert_eq!(
            user.state_dir,
            PathBuf::from("/home/ann/.local/state/chime")
        );
    }
}
