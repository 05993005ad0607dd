//! Stopping: the engine ends every running process (SIGTERM, the stop grace period, SIGKILL),
//! records how the runs ended, and refuses what is still queued (see "Shutdown" in the engine's
//! module docs).

use super::batch::Work;
use super::inbox::shutting_down;
use super::{Engine, MAX_BATCH, Message};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

impl Engine {
    /// Ends every running process (SIGTERM, grace, SIGKILL) and records the outcomes.
    pub(super) fn stop_runs(&mut self) {
        self.shutting_down = true;
        let running = self.runner.len();
        if running > 0 {
            tracing::info!(
                running,
                grace_ms = self.config.stop_grace.as_millis() as u64,
                "stopping running jobs"
            );
        }
        self.runner.terminate_all(self.config.stop_grace);
        // Supervisors SIGKILL after the grace; allow a little more for reaping.
        let deadline = Instant::now() + self.config.stop_grace + Duration::from_secs(5);
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.lazy)
                .into_iter()
                .chain(std::mem::take(&mut self.pending))
                .chain(self.mailbox.take().into_iter().map(Work::from))
                .map(Message::work)
                .collect();
            if batch.is_empty() {
                if self.runner.is_empty() {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if self.mailbox.ring_at(1) {
                    continue;
                }
                match self.inbox.recv_timeout(left) {
                    Ok(message) => batch.push(message),
                    Err(RecvTimeoutError::Timeout) => {
                        tracing::error!(
                            left = self.runner.len(),
                            "processes did not end after SIGKILL; their runs stay open and will be recorded as lost at the next start"
                        );
                        break;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.take_mail(&mut batch);
            self.apply(batch);
            // A stop always completes: when the ends cannot be recorded (the disk is full), it
            // ends at the deadline, and those runs are recorded as lost at the next start.
            if Instant::now() >= deadline {
                if let Some(fault) = self.store.fault() {
                    tracing::error!(
                        runs = self.runner.len(),
                        fault = %fault.message,
                        "stopping without recording how these runs ended; they will be recorded as lost at the next start"
                    );
                }
                break;
            }
        }
        // Requests still queued are refused.
        while let Ok(message) = self.inbox.try_recv() {
            if let Message::Work {
                reply: Some(reply), ..
            } = message
            {
                let _ = reply.send(Err(shutting_down()));
            }
        }
    }
}
