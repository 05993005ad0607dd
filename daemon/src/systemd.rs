//! Talking to systemd: readiness, status and stopping, through `$NOTIFY_SOCKET`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(err) = sd_notify::notify(states)
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(error = %err, "cannot notify systemd (said once)");
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

/// The engine loop is alive (systemd's watchdog).
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// A reload has begun: systemd waits for [`ready`] again.
pub fn reloading() {
    let now = NotifyState::monotonic_usec_now();
    match now {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if any, meant for this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
