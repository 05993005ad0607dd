//! The writer's view of queue records, settings and pauses: queue limits, the pause of
//! everything, and the timers of timed pauses.

use super::Writer;
use crate::job::PauseInfo;
use crate::store::StoreError;
use crate::store::record::{decode_record, encode};
use crate::store::schema::{KEY_PAUSE_ALL, PauseKey, QueueRecord};

impl Writer<'_> {
    /// Every stored queue record.
    pub fn queues(&self) -> Result<Vec<(String, QueueRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.queues.iter()? {
            let (name, value) = entry?;
            let record = decode_record("queues", &name, &value)?;
            out.push((name, record));
        }
        Ok(out)
    }

    /// Stores a queue's record; the default record (no limit, no pause) is not kept.
    pub fn put_queue(&mut self, name: &str, record: &QueueRecord) -> Result<(), StoreError> {
        if *record == QueueRecord::default() {
            self.queues.remove(name)?;
        } else {
            self.queues.insert(name, &encode(record))?;
        }
        Ok(())
    }

    /// A setting stored by key (postcard bytes), such as the queues chimed.toml manages.
    pub fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.settings.get(key)
    }

    pub fn set_setting(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(bytes) => {
                self.settings.insert(key, bytes)?;
            }
            None => {
                self.settings.remove(key)?;
            }
        }
        Ok(())
    }

    /// Runs in progress per queue on each fleet host, as each host last recorded them at the end
    /// of its batches (`running/HOST/QUEUE` in `meta`): (host, queue, runs).
    pub fn fleet_running(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.meta.range("running/".."running0")? {
            let (key, n) = entry?;
            if let Some((host, queue)) = key["running/".len()..].split_once('/') {
                out.push((host.to_owned(), queue.to_owned(), n));
            }
        }
        Ok(out)
    }

    /// Records that fleet host `host` runs `n` runs of `queue` (0: removes the record).
    pub fn set_fleet_running(&mut self, host: &str, queue: &str, n: u64) -> Result<(), StoreError> {
        let key = format!("running/{host}/{queue}");
        if n == 0 {
            self.meta.remove(key.as_str())
        } else {
            self.meta.insert(key.as_str(), n)
        }
    }

    /// Forgets what fleet host `host` ran (it started again, or was declared gone).
    pub fn clear_fleet_running(&mut self, host: &str) -> Result<(), StoreError> {
        let (from, to) = (format!("running/{host}/"), format!("running/{host}0"));
        self.meta.remove_range(from.as_str()..to.as_str())
    }

    /// Asks fleet host `host` to stop run `run` of its own: `signal`, or `None` to end it
    /// (SIGTERM, the grace, SIGKILL). Kept under `stop/HOST/RUN` in `settings` until that host
    /// takes it ([`Writer::take_stop_requests`]).
    pub fn request_stop(
        &mut self,
        host: &str,
        run: chime_proto::RunId,
        signal: Option<i32>,
    ) -> Result<(), StoreError> {
        let key = format!("stop/{host}/{:020}", run.0);
        self.settings.insert(key.as_str(), &encode(&signal))?;
        Ok(())
    }

    /// The requests to stop runs of `host` that other hosts made, removed as they are taken.
    pub fn take_stop_requests(
        &mut self,
        host: &str,
    ) -> Result<Vec<(chime_proto::RunId, Option<i32>)>, StoreError> {
        let (from, to) = (format!("stop/{host}/"), format!("stop/{host}0"));
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for entry in self.settings.range(from.as_str()..to.as_str())? {
            let (key, value) = entry?;
            let run = key[from.len()..].parse().ok().map(chime_proto::RunId);
            let signal: Option<Option<i32>> = postcard::from_bytes(&value).ok();
            if let (Some(run), Some(signal)) = (run, signal) {
                out.push((run, signal));
            }
            keys.push(key);
        }
        for key in keys {
            self.settings.remove(key.as_str())?;
        }
        Ok(out)
    }

    /// The pause of everything.
    pub fn pause_all(&self) -> Result<Option<PauseInfo>, StoreError> {
        self.settings
            .get_with(KEY_PAUSE_ALL, |value| {
                decode_record("settings", KEY_PAUSE_ALL, value)
            })?
            .transpose()
    }

    pub fn set_pause_all(&mut self, pause: Option<&PauseInfo>) -> Result<(), StoreError> {
        match pause {
            Some(pause) => {
                self.settings.insert(KEY_PAUSE_ALL, &encode(pause))?;
            }
            None => {
                self.settings.remove(KEY_PAUSE_ALL)?;
            }
        }
        Ok(())
    }

    /// Records when a timed pause ends.
    pub fn add_pause_timer(&mut self, until: i64, key: &PauseKey) -> Result<(), StoreError> {
        self.pause_timers
            .insert((until, key.encode().as_str()), ())?;
        Ok(())
    }

    pub fn remove_pause_timer(&mut self, until: i64, key: &PauseKey) -> Result<(), StoreError> {
        self.pause_timers.remove((until, key.encode().as_str()))?;
        Ok(())
    }

    /// Timed pauses that end at or before `now`.
    pub fn ended_pauses(&self, now: i64) -> Result<Vec<(i64, PauseKey)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.pause_timers.range(..=(now, "\u{10ffff}"))? {
            let ((until, target), ()) = entry?;
            match PauseKey::decode(&target) {
                Some(k) => out.push((until, k)),
                None => tracing::error!(target, "pause timer with an unknown target"),
            }
        }
        Ok(out)
    }

    /// When the earliest timed pause ends.
    pub fn first_pause_end(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.pause_timers.first()?.map(|((until, _), ())| until))
    }
}
