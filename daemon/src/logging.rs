//! Logging: tracing to stderr, readable, with data in fields.
//!
//! The level comes from `CHIME_LOG` (an `EnvFilter` directive such as `debug` or
//! `chime_daemon=debug`), default `info`. Under systemd stderr goes to the journal, which stamps
//! every line itself, so the timestamp is left out there.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("CHIME_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .compact();
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
