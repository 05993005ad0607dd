//! Is the account a job was recorded with still there, and may it run jobs?
//!
//! Jobs are kept by uid, and a uid outlives its account: `userdel ann` followed by `useradd bob`
//! may give bob ann's uid, and with it ann's recurring jobs. So a job records its owner's account
//! name too, and before each run of another user's job a root chimed checks, as cron does:
//!
//! 1. **The account.** The recorded name still exists and still has the job's uid.
//! 2. **Expiry.** Its shadow entry (when it has one in `/etc/shadow`) has not expired. This is how
//!    an account is locked as a whole (`usermod --expiredate 1`); `passwd -l` locks only the
//!    password, and, as with cron and pam_unix, such a user's jobs still run.
//! 3. **PAM**, where it is installed: the `account` stack of the PAM service `chime`
//!    (`/etc/pam.d/chime`, which `install.sh` writes to include the system's account stack), as
//!    cron runs its own. pam_unix checks expiry there; pam_access, pam_time, sssd or LDAP add
//!    whatever policy the host has. An expired *password* (`PAM_NEW_AUTHTOK_REQD`) does not stop a
//!    job, as with cron: nobody is there to change it. PAM is used only when `libpam.so.0` loads
//!    and the service's file exists, so that a host without it does not fall back to PAM's
//!    `other` service (which denies everything on many distributions); `status` says which
//!    checks are in force ([`Accounts::describe`]).
//!
//! A refused run is recorded as `spawn_error` with the reason and logged; the job stays, and its
//! next occurrence is checked again.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;
use std::sync::Mutex;

/// The checks in force on this host.
#[derive(Debug)]
pub struct Accounts {
    pam: Option<Pam>,
    service: String,
}

impl Accounts {
    /// The checks for this host: PAM's `service` stack when libpam loads and
    /// `/etc/pam.d/<service>` exists, and the account and its expiry always.
    pub fn new(service: &str) -> Self {
        let pam = if Path::new("/etc/pam.d").join(service).is_file() {
            match Pam::load() {
                Ok(pam) => Some(pam),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot load PAM (libpam.so.0); checking accounts without it");
                    None
                }
            }
        } else {
            None
        };
        Self {
            pam,
            service: service.to_owned(),
        }
    }

    /// Which checks are in force, for `status`.
    pub fn describe(&self) -> String {
        match &self.pam {
            Some(_) => format!(
                "account and expiry, and PAM service {} (/etc/pam.d/{})",
                self.service, self.service
            ),
            None => format!(
                "account and expiry (passwd, shadow); no PAM: /etc/pam.d/{} is missing or libpam cannot be loaded",
                self.service
            ),
        }
    }

    /// Checks that `name` is still the account of `uid` and may run jobs now. Blocks (NSS, PAM):
    /// call it off the async workers. `Err` says why not, for the run's record.
    pub fn check(&self, uid: u32, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(format!(
                "the job was stored without its owner's account name (uid {uid}); replace it to run it"
            ));
        }
        let account = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up the account {name}: {e}"))?;
        match account {
            None => {
                return Err(format!(
                    "the account {name} (uid {uid}) no longer exists; its jobs do not run"
                ));
            }
            Some(account) if account.uid.as_raw() != uid => {
                return Err(format!(
                    "the account {name} now has uid {}, not uid {uid} whose job this is; it does not run",
                    account.uid
                ));
            }
            Some(_) => {}
        }
        if let Some(expired) = shadow_expiry(name, today())? {
            return Err(format!(
                "the account {name} expired on {expired} (locked); its jobs do not run"
            ));
        }
        if let Some(pam) = &self.pam {
            pam.account(&self.service, name)?;
        }
        Ok(())
    }
}

/// Days since the epoch, today (UTC), as shadow counts them.
fn today() -> i64 {
    jiff::Timestamp::now().as_second().div_euclid(86_400)
}

/// The expiry date of `name`'s shadow entry if it is `today` or earlier; `None` if it has none,
/// has not expired, or has no entry in `/etc/shadow` (another NSS source then decides, through
/// PAM).
fn shadow_expiry(name: &str, today: i64) -> Result<Option<String>, String> {
    let text = match std::fs::read_to_string("/etc/shadow") {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read /etc/shadow: {err}")),
    };
    Ok(expired_in(&text, name, today))
}

/// The expiry in shadow text `text` (see [`shadow_expiry`]), as a date.
fn expired_in(text: &str, name: &str, today: i64) -> Option<String> {
    let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
    // name:password:lastchg:min:max:warn:inactive:expire:reserved; an empty expiry never comes.
    let expire: i64 = line.split(':').nth(7)?.trim().parse().ok()?;
    (expire > 0 && today >= expire).then(|| {
        jiff::Timestamp::from_second(expire * 86_400)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| format!("day {expire}"))
    })
}

const PAM_SUCCESS: c_int = 0;
const PAM_SILENT: c_int = 0x8000;
const PAM_CONV_ERR: c_int = 19;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const c_void, *mut *mut c_void, *mut c_void) -> c_int,
    appdata: *mut c_void,
}

/// Account checks have nothing to ask anyone: every question is refused.
extern "C" fn no_conversation(
    _count: c_int,
    _messages: *mut *const c_void,
    _responses: *mut *mut c_void,
    _data: *mut c_void,
) -> c_int {
    PAM_CONV_ERR
}

type PamStart =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type PamAcctMgmt = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamEnd = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamStrerror = unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char;

/// libpam, loaded at run time (a host without it runs chime all the same), and used by one
/// thread at a time (PAM modules need not be thread-safe).
struct Pam {
    start: PamStart,
    acct_mgmt: PamAcctMgmt,
    end: PamEnd,
    strerror: PamStrerror,
    lock: Mutex<()>,
    /// Keeps the functions above loaded.
    _library: libloading::Library,
}

impl std::fmt::Debug for Pam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pam").finish_non_exhaustive()
    }
}

impl Pam {
    #[allow(unsafe_code)]
    fn load() -> Result<Self, libloading::Error> {
        // SAFETY: loading libpam runs its initialisers, which only set up the library; chimed
        // loads it once, at start.
        let library = unsafe { libloading::Library::new("libpam.so.0") }?;
        // SAFETY: the symbols are looked up with the signatures of <security/pam_appl.h>, and
        // the pointers are kept only as long as `_library` keeps the library loaded.
        unsafe {
            let start = *library.get::<PamStart>(b"pam_start\0")?;
            let acct_mgmt = *library.get::<PamAcctMgmt>(b"pam_acct_mgmt\0")?;
            let end = *library.get::<PamEnd>(b"pam_end\0")?;
            let strerror = *library.get::<PamStrerror>(b"pam_strerror\0")?;
            Ok(Self {
                start,
                acct_mgmt,
                end,
                strerror,
                lock: Mutex::new(()),
                _library: library,
            })
        }
    }

    /// Runs the `account` stack of `service` for `user`.
    #[allow(unsafe_code)]
    fn account(&self, service: &str, user: &str) -> Result<(), String> {
        let service_c = CString::new(service).map_err(|_| "bad PAM service name".to_owned())?;
        let user_c = CString::new(user).map_err(|_| "bad user name".to_owned())?;
        let conv = PamConv {
            conv: no_conversation,
            appdata: std::ptr::null_mut(),
        };
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings and a conversation that outlives the handle
        // (pam_end is called below, before `conv` goes out of scope); `handle` is written by
        // pam_start.
        let started =
            unsafe { (self.start)(service_c.as_ptr(), user_c.as_ptr(), &conv, &mut handle) };
        if started != PAM_SUCCESS || handle.is_null() {
            return Err(format!(
                "PAM service {service} could not start for {user} (error {started})"
            ));
        }
        // SAFETY: `handle` came from a successful pam_start and is ended once, here.
        let verdict = unsafe { (self.acct_mgmt)(handle, PAM_SILENT) };
        let reason = (verdict != PAM_SUCCESS).then(|| {
            // SAFETY: as above; pam_strerror returns a static string or null.
            let text = unsafe { (self.strerror)(handle, verdict) };
            if text.is_null() {
                format!("error {verdict}")
            } else {
                // SAFETY: non-null, NUL-terminated, static.
                unsafe { CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned()
            }
        });
        // SAFETY: ends the handle started above, once.
        unsafe { (self.end)(handle, verdict) };
        match (verdict, reason) {
            (PAM_SUCCESS | PAM_NEW_AUTHTOK_REQD, _) => Ok(()),
            (_, reason) => Err(format!(
                "PAM service {service} refused the account {user}: {}",
                reason.unwrap_or_default()
            )),
        }
    }
}

// SAFETY of Send and Sync: the function pointers are plain code addresses, valid while
// `_library` lives, and every call is made under `lock`.
#[allow(unsafe_code)]
unsafe impl Send for Pam {}
#[allow(unsafe_code)]
unsafe impl Sync for Pam {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_the_shadow_entry() {
        let text =
            "root:*:19000:0:99999:7:::\nann:!:20000::::::\nbob:$6$x:20000:0:99999:7::20100:\n";
        assert_eq!(expired_in(text, "root", 20_500), None);
        assert_eq!(
            expired_in(text, "ann", 20_500),
            None,
            "a locked password is not an expiry"
        );
        assert_eq!(expired_in(text, "bob", 20_099), None);
        assert_eq!(
            expired_in(text, "bob", 20_100).as_deref(),
            Some("2025-01-12")
        );
        assert_eq!(expired_in(text, "cat", 20_500), None);
    }

    #[test]
    fn the_daemons_own_account_passes() {
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap();
        let accounts = Accounts::new("chime-test-no-such-service");
        assert!(accounts.describe().contains("no PAM"));
        accounts.check(me.uid.as_raw(), &me.name).unwrap();
        let err = accounts.check(me.uid.as_raw() + 1, &me.name).unwrap_err();
        assert!(err.contains("now has uid"), "{err}");
        let err = accounts.check(4_000_000, "no-such-user-xyz").unwrap_err();
        assert!(err.contains("no longer exists"), "{err}");
    }
}
