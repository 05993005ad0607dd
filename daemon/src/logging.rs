//! Logging: tracing to the journal under systemd, else readable lines on stderr, with data in
//! fields either way.
//!
//! The level comes from `CHIME_LOG` (an `EnvFilter` directive such as `debug` or
//! `chime_daemon=debug`), default `info`.
//!
//! Where records go is `--log` (or `log =` in chimed.toml): `journal` sends them to journald's native socket, where every
//! tracing field becomes a journal field of the same name in capitals, without a prefix (`job_id`
//! becomes `JOB_ID`, so `journalctl -u chimed JOB_ID=42` finds a job's records), with
//! `SYSLOG_IDENTIFIER=chimed`. `stderr` writes readable lines. `auto`, the default, picks the
//! journal when stderr is connected to it, which is how systemd starts a service
//! (`$JOURNAL_STREAM` names stderr's device and inode). If journald cannot be reached, records
//! go to stderr with a warning. Lines on stderr that end up in the journal anyway carry no
//! timestamp: the journal stamps each one itself.

pub use crate::config::LogTarget;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Call once, first thing.
pub fn init(target: LogTarget) {
    let filter = || EnvFilter::try_from_env("CHIME_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_is_journal = stderr_is_journal();
    let journal = match target {
        LogTarget::Journal => true,
        LogTarget::Auto => stderr_is_journal,
        LogTarget::Stderr => false,
    };
    let mut unreachable = None;
    if journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("chimed".into());
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(err) => unreachable = Some(err),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .compact();
    if stderr_is_journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
    if let Some(err) = unreachable {
        tracing::warn!(error = %err, "journald cannot be reached; logging to stderr instead");
    }
}

/// Whether stderr is the journal stream systemd connected (`$JOURNAL_STREAM` is
/// `DEVICE:INODE` of it, see systemd.exec(5)); a stderr redirected since is not.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<libc::dev_t>(), ino.parse::<libc::ino_t>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}
