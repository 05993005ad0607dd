//! The runner's mailbox: how supervisors report to the engine without waking it for each report.
//!
//! Users' requests go through the engine's inbox, and each one wakes the engine: someone is
//! waiting for the answer. Runners' reports (a process ended, a pid, a spawn failure) wait for
//! nobody, and under a stream of short jobs there are thousands a second; waking the engine
//! thread for each (a futex wake on the sender's side, a context switch and a loop turn on the
//! engine's) costs more than recording it. So reports are posted here, and the engine is rung
//! (the bell given to [`Mailbox::new`]; the engine's rings its inbox) only when as many reports
//! are waiting as it asked for ([`Mailbox::ring_at`]):
//!
//! - while the engine is idle it asks for one, so a lone report is handled at once;
//! - while it gathers the ends of runs for one commit it asks for as many as it expects, and
//!   sleeps until they are all in, a request arrives, or its window closes;
//! - [`Mailbox::take`] hands over everything and asks for one again.
//!
//! No report is lost between a check and a wait: the count and the wish are read and written
//! under one lock, and the ring goes through the inbox that the engine waits on.

use super::Report;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Mail {
    items: Vec<Report>,
    /// Ring when this many reports are waiting (at least 1).
    ring_at: usize,
}

/// Rings the engine; false when the engine is gone.
pub type Bell = Box<dyn Fn() -> bool + Send + Sync>;

/// Reports from the runner to the engine. Shared by the supervisors (which post) and the engine
/// (which takes).
pub struct Mailbox {
    mail: Mutex<Mail>,
    bell: Bell,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("mail", &self.mail).finish()
    }
}

impl Mailbox {
    pub fn new(bell: Bell) -> Self {
        Self {
            mail: Mutex::new(Mail {
                items: Vec::new(),
                ring_at: 1,
            }),
            bell,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mail> {
        // Every update under the lock is a single push or swap: a panic cannot leave it torn.
        self.mail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts a report. Returns false if the engine is gone (the report will not be recorded).
    /// Rings the bell without mail: wakes the engine to look at the store (a fleet host heard
    /// that another committed). Whether the engine was there to hear it.
    pub fn ring(&self) -> bool {
        (self.bell)()
    }

    pub fn post(&self, report: Report) -> bool {
        let ring = {
            let mut mail = self.lock();
            mail.items.push(report);
            mail.items.len() == mail.ring_at
        };
        !ring || (self.bell)()
    }

    /// Asks to be rung when `wanted` reports are waiting. Returns true if that many already are
    /// (do not wait for the ring, it will not come).
    pub fn ring_at(&self, wanted: usize) -> bool {
        let mut mail = self.lock();
        mail.ring_at = wanted.max(1);
        mail.items.len() >= mail.ring_at
    }

    /// Takes every waiting report, in the order they were posted, and asks to be rung for the
    /// next one.
    pub fn take(&self) -> Vec<Report> {
        let mut mail = self.lock();
        mail.ring_at = 1;
        std::mem::take(&mut mail.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Event;
    use chime_proto::{JobId, RunId};
    use std::sync::mpsc;

    fn report(n: u64) -> Report {
        Report {
            job: JobId(n),
            event: Event::Unstarted { run: RunId(n) },
        }
    }

    /// A mailbox whose bell sends a unit to `rx`, as the engine's rings its inbox.
    fn mailbox() -> (Mailbox, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Mailbox::new(Box::new(move || tx.send(()).is_ok())), rx)
    }

    fn doorbells(rx: &mpsc::Receiver<()>) -> usize {
        rx.try_iter().count()
    }

    #[test]
    fn an_idle_engine_is_rung_once_for_a_burst_of_reports() {
        let (mailbox, rx) = mailbox();
        for n in 0..5 {
            assert!(mailbox.post(report(n)));
        }
        assert_eq!(doorbells(&rx), 1, "one ring for the first report");
        assert_eq!(mailbox.take().len(), 5);
        mailbox.post(report(9));
        assert_eq!(
            doorbells(&rx),
            1,
            "after a take, the next report rings again"
        );
    }

    #[test]
    fn a_gathering_engine_is_rung_when_what_it_expects_is_in() {
        let (mailbox, rx) = mailbox();
        assert!(!mailbox.ring_at(3));
        mailbox.post(report(1));
        mailbox.post(report(2));
        assert_eq!(doorbells(&rx), 0);
        mailbox.post(report(3));
        assert_eq!(doorbells(&rx), 1);
        // Asking for fewer than are waiting says so instead of waiting for a ring.
        assert!(mailbox.ring_at(2));
        let taken = mailbox.take();
        assert_eq!(
            taken.iter().map(|r| r.job.0).collect::<Vec<_>>(),
            [1, 2, 3],
            "in the order posted"
        );
    }

    #[test]
    fn posting_to_a_gone_engine_says_so() {
        let (mailbox, rx) = mailbox();
        drop(rx);
        assert!(!mailbox.post(report(1)));
    }
}
