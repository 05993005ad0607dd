//! Talking to systemd: readiness, status and stopping, through `$NOTIFY_SOCKET`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// The database is open, recovery is done and the socket listens.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line summary for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
