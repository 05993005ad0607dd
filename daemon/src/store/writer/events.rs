//! The writer's view of the event log: appending an event in the transaction of its change,
//! and pruning the log by age and by each user's share.

use super::Writer;
use crate::job::Job;
use crate::store::StoreError;
use crate::store::record::seal_into;
use crate::store::schema::events_key;
use chime_proto::EventRecord;

impl Writer<'_> {
    /// Appends an event to the log under the next sequence number, which it returns with the
    /// event. `actor`: who made the change (`None`: chimed itself). `shared`: the job's owner is
    /// held to a share of the log (see [`Writer::prune_owner_events`]).
    pub fn append_event(
        &mut self,
        at_ms: i64,
        actor: Option<u32>,
        job: Option<&Job>,
        kind: chime_proto::EventKind,
        shared: bool,
    ) -> Result<EventRecord, StoreError> {
        let record = EventRecord {
            seq: self.next_event,
            at_ms,
            job: job.map(|j| j.id),
            name: job.and_then(|j| j.name.clone()),
            owner: job.map(|j| j.owner),
            kind,
            actor,
        };
        self.events
            .insert(record.seq, seal_into(&mut self.scratch, &record))?;
        if shared && let Some(owner) = record.owner {
            self.event_owners.insert((owner, record.seq), ())?;
            *self.owner_events_delta.entry(owner).or_default() += 1;
        }
        self.next_event += 1;
        Ok(record)
    }

    /// The newest event's sequence number, this transaction's included (0: none yet).
    pub fn event_head(&self) -> u64 {
        self.next_event.saturating_sub(1)
    }

    /// Holds each user who got events in this transaction to `share` of the log: removes their
    /// own oldest events beyond it (at most `limit` now; the rest in later transactions).
    /// Entries of events the log already pruned by age are dropped on the way, so the per-user
    /// index never outgrows the shares.
    pub fn prune_owner_events(&mut self, share: u64, limit: usize) -> Result<usize, StoreError> {
        let touched: Vec<u32> = self
            .owner_events_delta
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(o, _)| *o)
            .collect();
        let mut removed = 0;
        for owner in touched {
            let stored = self.meta.get(events_key(owner).as_str())?.unwrap_or(0);
            let delta = self.owner_events_delta.get(&owner).copied().unwrap_or(0);
            let count = stored.saturating_add_signed(delta);
            let excess = usize::try_from(count.saturating_sub(share))
                .unwrap_or(usize::MAX)
                .min(limit.saturating_sub(removed));
            if excess == 0 {
                continue;
            }
            let oldest: Vec<u64> = self
                .event_owners
                .range((owner, 0)..=(owner, u64::MAX))?
                .take(excess)
                .map(|e| e.map(|((_, seq), ())| seq))
                .collect::<Result<_, _>>()?;
            for seq in &oldest {
                self.event_owners.remove((owner, *seq))?;
                self.events.remove(*seq)?;
            }
            *self.owner_events_delta.entry(owner).or_default() -= oldest.len() as i64;
            removed += oldest.len();
        }
        Ok(removed)
    }

    /// Removes the oldest events so that at most `keep` remain, removing at most `limit` now (the
    /// rest go in later transactions). Returns how many were removed.
    pub fn prune_events(&mut self, keep: u64, limit: usize) -> Result<usize, StoreError> {
        let Some(first) = self.events.first()?.map(|(k, _)| k) else {
            return Ok(0);
        };
        let retained = self.next_event.saturating_sub(first);
        let excess = usize::try_from(retained.saturating_sub(keep)).unwrap_or(usize::MAX);
        let n = excess.min(limit);
        if n == 0 {
            return Ok(0);
        }
        let end = first + n as u64;
        self.events.remove_range(first..end)?;
        Ok(n)
    }
}
