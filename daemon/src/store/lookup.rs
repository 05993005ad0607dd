//! Finding the job a caller means: [`resolve_name`] (names are unique per owner) and [`Found`],
//! which tells a job from a missing, ambiguous or damaged one.

use super::StoreError;
use super::record::Damage;
use super::table::Tbl;
use crate::job::Job;

/// What a job name means to a caller (see [`resolve_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Job(chime_proto::JobId),
    Missing,
    /// Several users have a job of that name (only root can be in doubt): (owner, job).
    Ambiguous(Vec<(u32, chime_proto::JobId)>),
}

/// A job looked up for a caller.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Short-lived, and almost always the job.
pub enum Found {
    Job(Job),
    Missing,
    /// See [`Named::Ambiguous`].
    Ambiguous(Vec<(u32, chime_proto::JobId)>),
    /// The job's record is damaged, or the name index points to a job of another name.
    /// `theirs`: the `owners` index says the caller owns it (or the caller is root), so the
    /// caller may be told, and may remove it.
    Damaged {
        id: chime_proto::JobId,
        damage: Damage,
        theirs: bool,
    },
}

impl Found {
    /// The job, if exactly one was found.
    pub fn job(self) -> Option<Job> {
        match self {
            Self::Job(job) => Some(job),
            Self::Missing | Self::Ambiguous(_) | Self::Damaged { .. } => None,
        }
    }

    /// What a lookup of job `id` (by `name`, when it was looked up by one) found. A record that
    /// is damaged, or that is not named what the name index says, is [`Found::Damaged`] rather
    /// than an error: the caller is answered, and everything else goes on. `theirs` asks the
    /// `owners` index whether the caller owns `id`.
    pub(super) fn of(
        loaded: Result<Option<Job>, StoreError>,
        id: chime_proto::JobId,
        name: Option<&str>,
        theirs: impl FnOnce() -> Result<bool, StoreError>,
    ) -> Result<Self, StoreError> {
        let damage = match loaded {
            Ok(Some(job)) => {
                // `USER/NAME` names the job NAME.
                let bare = name.map(|n| n.rsplit_once('/').map_or(n, |(_, bare)| bare));
                match bare {
                    Some(bare) if job.name.as_deref() != Some(bare) => Damage::new(
                        "names",
                        bare,
                        format!("it points to job {id}, which is named {:?}", job.name),
                    ),
                    _ => return Ok(Self::Job(job)),
                }
            }
            Ok(None) => return Ok(Self::Missing),
            Err(StoreError::Corrupt(damage)) => damage,
            Err(err) => return Err(err),
        };
        tracing::error!(job_id = id.0, %damage, "a damaged record was found");
        Ok(Self::Damaged {
            id,
            damage,
            theirs: theirs()?,
        })
    }
}

/// How `caller` names a job. Names are unique per owner, so that one user's name never blocks
/// another's:
///
/// - `NAME` is the caller's own job of that name; for root, who may act on everyone's jobs and
///   has none of that name, the one job of any owner with that name ([`Named::Ambiguous`] when
///   several users have one);
/// - `USER/NAME` (names never contain `/`) is that user's job, for that user and root.
pub fn resolve_name(
    names: &Tbl<'_, (&'static str, u32), u64>,
    caller: u32,
    name: &str,
) -> Result<Named, StoreError> {
    let id = chime_proto::JobId;
    if let Some((user, name)) = name.split_once('/') {
        let owner = match user.parse::<u32>() {
            Ok(uid) => Some(uid),
            Err(_) => nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw()),
        };
        return Ok(match owner {
            Some(owner) if caller == 0 || caller == owner => names
                .get((name, owner))?
                .map_or(Named::Missing, |v| Named::Job(id(v))),
            _ => Named::Missing,
        });
    }
    if let Some(v) = names.get((name, caller))? {
        return Ok(Named::Job(id(v)));
    }
    if caller != 0 {
        return Ok(Named::Missing);
    }
    let mut all = Vec::new();
    for entry in names.range((name, 0)..=(name, u32::MAX))?.take(16) {
        let ((_, owner), value) = entry?;
        all.push((owner, chime_proto::JobId(value)));
    }
    Ok(match all[..] {
        [] => Named::Missing,
        [(_, only)] => Named::Job(only),
        _ => Named::Ambiguous(all),
    })
}
