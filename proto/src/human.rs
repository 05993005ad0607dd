//! What people type and read, shared by `chimed` and `chimectl` so that both agree: default
//! paths, a program named without its path, durations and instants.

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp, ZonedDateTime, civil, tz::TimeZone};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Finds `program` (no slash) in `path` (a `PATH` value) the way a shell would: the first
/// executable file.
pub fn find_in_path(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The socket, state directory and configuration file a daemon uses when none are given, and a
/// client looks for: the one rule chimed and chimectl share.
///
/// As root: `/run/chime/chimed.sock`, `/var/lib/chime` and `/etc/chime/chimed.toml` (the system
/// daemon's, [`DefaultPaths::system`]). As any other user:
///
/// - **socket**: `$XDG_RUNTIME_DIR/chime/chimed.sock`, else `/run/user/UID/chime/chimed.sock`
///   when `/run/user/UID` is a directory of that user's that no one else may write, else none
///   ([`NoDefault::Runtime`]).
/// - **state**: `$XDG_STATE_HOME/chime`, else `HOME/.local/state/chime`.
/// - **configuration**: `$XDG_CONFIG_HOME/chime/chimed.toml`, else
///   `HOME/.config/chime/chimed.toml`.
///
/// `HOME` is `$HOME`, else the home directory of the user's passwd entry, else there is no
/// default ([`NoDefault::Home`]). Environment variables that are unset, empty or relative are
/// ignored, as the XDG base directory specification says.
///
/// There is deliberately no fallback to a shared directory such as `/tmp`: any user may create
/// `/tmp/chime-1000/chimed.sock` before user 1000 does, and a client that went there would hand
/// its commands (and their environment) to the one who planted it. Without a private directory a
/// user's daemon needs an explicit `--socket`, and a user's client goes to the system daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPaths {
    pub socket: Result<PathBuf, NoDefault>,
    pub state_dir: Result<PathBuf, NoDefault>,
    pub config: Result<PathBuf, NoDefault>,
}

/// Why a user has no default for a path; the caller says what to give instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoDefault {
    /// No private runtime directory to put a socket in.
    #[error(
        "XDG_RUNTIME_DIR is not set, and /run/user/{uid} is missing or not private to uid {uid}"
    )]
    Runtime { uid: u32 },
    /// No home directory to put state and configuration in.
    #[error("HOME is not set, and uid {uid} has no home directory in the passwd database")]
    Home { uid: u32 },
}

/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/chime/chimed.sock";

impl DefaultPaths {
    /// The system daemon's paths (root's defaults).
    pub fn system() -> Self {
        Self {
            socket: Ok(PathBuf::from(SYSTEM_SOCKET)),
            state_dir: Ok(PathBuf::from("/var/lib/chime")),
            config: Ok(PathBuf::from("/etc/chime/chimed.toml")),
        }
    }

    /// The default paths of this process's user, over the environment and the user's passwd
    /// entry. chimed and chimectl both take theirs from here.
    pub fn of_this_user() -> Self {
        let uid = nix::unistd::getuid();
        Self::for_user(
            uid.as_raw(),
            |k| std::env::var(k).ok(),
            || {
                nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map(|user| user.dir)
            },
        )
    }

    /// Defaults for `uid`, reading the environment through `var`; `passwd_home` gives the home
    /// directory of the user's passwd entry, and is asked only when `$HOME` is of no use.
    pub fn for_user(
        uid: u32,
        var: impl Fn(&str) -> Option<String>,
        passwd_home: impl FnOnce() -> Option<PathBuf>,
    ) -> Self {
        Self::resolve(uid, var, passwd_home, |dir| is_private_dir(dir, uid))
    }

    /// [`DefaultPaths::for_user`] with the check of `/run/user/UID` given, for tests.
    fn resolve(
        uid: u32,
        var: impl Fn(&str) -> Option<String>,
        passwd_home: impl FnOnce() -> Option<PathBuf>,
        is_private: impl Fn(&Path) -> bool,
    ) -> Self {
        if uid == 0 {
            return Self::system();
        }
        let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let socket = absolute("XDG_RUNTIME_DIR")
            .or_else(|| {
                let run_user = PathBuf::from(format!("/run/user/{uid}"));
                is_private(&run_user).then_some(run_user)
            })
            .map(|dir| dir.join("chime/chimed.sock"))
            .ok_or(NoDefault::Runtime { uid });
        let home = absolute("HOME")
            .or_else(|| passwd_home().filter(|p| p.is_absolute()))
            .ok_or(NoDefault::Home { uid });
        let state_dir = absolute("XDG_STATE_HOME")
            .map(Ok)
            .unwrap_or_else(|| home.clone().map(|home| home.join(".local/state")))
            .map(|dir| dir.join("chime"));
        let config = absolute("XDG_CONFIG_HOME")
            .map(Ok)
            .unwrap_or_else(|| home.map(|home| home.join(".config")))
            .map(|dir| dir.join("chime/chimed.toml"));
        Self {
            socket,
            state_dir,
            config,
        }
    }
}

/// Whether `dir` is a directory (not a link to one) of `uid` that neither group nor others may
/// write: a place where no one else can put a socket.
fn is_private_dir(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir)
        .is_ok_and(|meta| meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0)
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
            .map_err(|_| not_a_duration(text))?,
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

/// Why `text` is not a duration, in the user's terms (the parser's own message names its
/// internals): a bare number is told its unit is missing.
fn not_a_duration(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        format!(
            "{text:?} has no unit: write {text}s, {text}m, {text}h or {text}d, \
             or quote the words (\"{text} minutes\")"
        )
    } else {
        format!("{text:?} is not a duration; use forms like 90s, 5m, 1h30m, 2d or \"2 days\"")
    }
}

/// Parses a size such as `8MiB`, `512K`, `1G`, `2T` or `1000` (bytes). Units are powers of 1024,
/// as systemd's (`1K` is 1024 bytes).
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
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use K, M, G or T")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a CPU quota as systemd writes it: `50%` (half of one CPU), `200%` (two CPUs).
pub fn parse_cpu_quota(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let Some(number) = t.strip_suffix('%') else {
        return Err(format!(
            "{text:?} is not a CPU quota; give a percent of one CPU, such as 50% or 200%"
        ));
    };
    number.trim().parse().map_err(|_| {
        format!("{text:?} is not a CPU quota; give a whole percent of one CPU, such as 50% or 200%")
    })
}

/// Formats a size for people, in the units [`parse_size`] reads: `1GiB`, `64MiB`, `1536KiB`,
/// `100B` (exact: the largest unit that divides it).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
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
        assert_eq!(
            parse_duration("soon").unwrap_err(),
            "\"soon\" is not a duration; use forms like 90s, 5m, 1h30m, 2d or \"2 days\""
        );
        // `--in 5 minutes` unquoted: the number alone is told its unit is missing.
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "\"5\" has no unit: write 5s, 5m, 5h or 5d, or quote the words (\"5 minutes\")"
        );
        assert_eq!(parse_duration("5 minutes"), Ok(Duration::from_secs(300)));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes_people_write() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(format_size(3 << 40), "3TiB");
        assert_eq!(parse_cpu_quota("50%"), Ok(50));
        assert_eq!(parse_cpu_quota(" 250% "), Ok(250));
        assert!(parse_cpu_quota("50").is_err());
        assert!(parse_cpu_quota("-5%").is_err());
        assert!(parse_cpu_quota("1.5%").is_err());
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

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn no_passwd() -> Option<PathBuf> {
        None
    }

    #[test]
    fn root_gets_the_system_paths_whatever_the_environment() {
        let root = DefaultPaths::for_user(
            0,
            env(&[("XDG_RUNTIME_DIR", "/run/user/0"), ("HOME", "/root")]),
            no_passwd,
        );
        assert_eq!(root, DefaultPaths::system());
        assert_eq!(root.socket, Ok(PathBuf::from("/run/chime/chimed.sock")));
        assert_eq!(root.state_dir, Ok(PathBuf::from("/var/lib/chime")));
        assert_eq!(root.config, Ok(PathBuf::from("/etc/chime/chimed.toml")));
    }

    #[test]
    fn xdg_variables_come_first() {
        let paths = DefaultPaths::resolve(
            1000,
            env(&[
                ("XDG_RUNTIME_DIR", "/run/xdg"),
                ("XDG_STATE_HOME", "/srv/state"),
                ("XDG_CONFIG_HOME", "/srv/config"),
                ("HOME", "/home/ann"),
            ]),
            || panic!("the passwd entry is not needed when HOME is set"),
            |_| true,
        );
        assert_eq!(
            paths.socket,
            Ok(PathBuf::from("/run/xdg/chime/chimed.sock"))
        );
        assert_eq!(paths.state_dir, Ok(PathBuf::from("/srv/state/chime")));
        assert_eq!(
            paths.config,
            Ok(PathBuf::from("/srv/config/chime/chimed.toml"))
        );
    }

    #[test]
    fn run_user_serves_when_it_is_the_users_own() {
        let own = DefaultPaths::resolve(1000, env(&[("HOME", "/home/ann")]), no_passwd, |dir| {
            dir == Path::new("/run/user/1000")
        });
        assert_eq!(
            own.socket,
            Ok(PathBuf::from("/run/user/1000/chime/chimed.sock"))
        );
        assert_eq!(
            own.state_dir,
            Ok(PathBuf::from("/home/ann/.local/state/chime"))
        );
        assert_eq!(
            own.config,
            Ok(PathBuf::from("/home/ann/.config/chime/chimed.toml"))
        );
    }

    #[test]
    fn no_runtime_directory_means_no_socket_never_a_shared_one() {
        // Planted sockets (issue 9): /tmp/chime-UID was a default anyone could create first.
        for runtime in [None, Some(""), Some("relative/run")] {
            let mut vars = vec![("HOME", "/home/ann")];
            if let Some(dir) = runtime {
                vars.push(("XDG_RUNTIME_DIR", dir));
            }
            let paths = DefaultPaths::resolve(1000, env(&vars), no_passwd, |_| false);
            assert_eq!(
                paths.socket,
                Err(NoDefault::Runtime { uid: 1000 }),
                "{runtime:?}"
            );
            assert!(
                paths
                    .socket
                    .unwrap_err()
                    .to_string()
                    .contains("XDG_RUNTIME_DIR"),
                "the reason names the variable to set"
            );
        }
    }

    #[test]
    fn home_comes_from_the_passwd_entry_when_the_environment_has_none() {
        for home in [None, Some(""), Some("relative")] {
            let mut vars = vec![("XDG_RUNTIME_DIR", "/run/user/1000")];
            if let Some(home) = home {
                vars.push(("HOME", home));
            }
            let paths = DefaultPaths::resolve(
                1000,
                env(&vars),
                || Some(PathBuf::from("/home/ann")),
                |_| false,
            );
            assert_eq!(
                paths.state_dir,
                Ok(PathBuf::from("/home/ann/.local/state/chime")),
                "{home:?}"
            );
            assert_eq!(
                paths.config,
                Ok(PathBuf::from("/home/ann/.config/chime/chimed.toml"))
            );
        }
    }

    #[test]
    fn no_home_anywhere_means_no_state_or_configuration_default() {
        let paths = DefaultPaths::resolve(1000, env(&[]), no_passwd, |_| false);
        assert_eq!(paths.socket, Err(NoDefault::Runtime { uid: 1000 }));
        assert_eq!(paths.state_dir, Err(NoDefault::Home { uid: 1000 }));
        assert_eq!(paths.config, Err(NoDefault::Home { uid: 1000 }));
        // A relative passwd home is no better than none.
        let relative =
            DefaultPaths::resolve(1000, env(&[]), || Some(PathBuf::from("home")), |_| false);
        assert_eq!(relative.state_dir, Err(NoDefault::Home { uid: 1000 }));
        // The XDG variables alone still serve.
        let xdg = DefaultPaths::resolve(
            1000,
            env(&[("XDG_STATE_HOME", "/s"), ("XDG_CONFIG_HOME", "/c")]),
            no_passwd,
            |_| false,
        );
        assert_eq!(xdg.state_dir, Ok(PathBuf::from("/s/chime")));
        assert_eq!(xdg.config, Ok(PathBuf::from("/c/chime/chimed.toml")));
    }

    #[test]
    fn no_default_is_ever_under_tmp() {
        let envs: [&[(&str, &str)]; 3] = [
            &[],
            &[("HOME", "/home/ann")],
            &[("XDG_RUNTIME_DIR", "/run/user/1000")],
        ];
        for vars in envs {
            for passwd in [None, Some(PathBuf::from("/home/ann"))] {
                for private in [false, true] {
                    let paths =
                        DefaultPaths::resolve(1000, env(vars), || passwd.clone(), |_| private);
                    for path in [&paths.socket, &paths.state_dir, &paths.config]
                        .into_iter()
                        .flatten()
                    {
                        assert!(!path.starts_with("/tmp"), "{path:?} from {vars:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn run_user_must_be_a_private_directory_of_the_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("chime-proto-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uid = std::fs::metadata(&dir).unwrap().uid();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_private_dir(&dir, uid));
        assert!(!is_private_dir(&dir, uid + 1), "someone else's");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!is_private_dir(&dir, uid), "writable by others");
        std::fs::remove_dir(&dir).unwrap();
        assert!(!is_private_dir(&dir, uid), "missing");
    }
}
