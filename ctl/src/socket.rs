//! Which chimed chimectl talks to, and whether to trust what answers there.
//!
//! **Choice.** `--socket` (or `CHIME_SOCKET`) when given. Otherwise the user's own chimed's
//! default socket, by the rule chimed itself follows (`chime_proto::human::DefaultPaths`): when it exists, or when
//! the system chimed's does not exist either (so that the error names the socket the user's own
//! chimed would listen on). Else the system chimed's, `/run/chime/chimed.sock`, which serves root
//! and the `chime` group. A user without a private runtime directory (no `XDG_RUNTIME_DIR`, no
//! `/run/user/UID` of their own) has no default socket at all and goes to the system chimed: no
//! path in a directory others can write is ever a default. How the socket was chosen decides
//! what a failed connection suggests ([`Socket::connect`]).
//!
//! **Trust.** A socket is only a path, and whoever bound it answers there. So before chimectl
//! sends anything, not even its hello, it asks the kernel who serves the socket (`SO_PEERCRED`:
//! the uid of the process that listened) and goes on only when that is root (the system chimed)
//! or the user themself (their own chimed). Anyone else may have planted the socket to read the
//! user's commands and the environment they pass to their jobs; chimectl refuses, and says so.

use anyhow::{Context, bail};
use chime_proto::human::{NoDefault, SYSTEM_SOCKET};
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// A socket chosen to talk to, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Socket {
    pub path: PathBuf,
    chosen: Chosen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chosen {
    /// `--socket` or `CHIME_SOCKET`.
    Given,
    /// The user's own chimed's default socket; root's is the system one.
    Own,
    /// The system chimed's, because the user's own default socket does not exist (`Ok`) or the
    /// user has none (`Err`, with the reason).
    System { own: Result<PathBuf, NoDefault> },
}

impl Socket {
    /// The socket to use: `given`, else the default for this user (see the module docs).
    pub fn choose(given: Option<PathBuf>) -> Self {
        let uid = nix::unistd::getuid().as_raw();
        Self::choose_from(
            uid,
            given,
            chime_proto::human::DefaultPaths::of_this_user().socket,
            Path::exists,
        )
    }

    /// [`Socket::choose`] with the user's default and the file system given, for tests.
    fn choose_from(
        uid: u32,
        given: Option<PathBuf>,
        own: Result<PathBuf, NoDefault>,
        exists: impl Fn(&Path) -> bool,
    ) -> Self {
        if let Some(path) = given {
            return Self {
                path,
                chosen: Chosen::Given,
            };
        }
        let system = system_socket();
        match own {
            Ok(own) if uid == 0 || exists(&own) || !exists(&system) => Self {
                path: own,
                chosen: Chosen::Own,
            },
            own => Self {
                path: system,
                chosen: Chosen::System { own },
            },
        }
    }

    /// Connects, and checks that root or this user serves the socket before anything is sent.
    /// The errors name the socket and say what to do: start a chimed, or use another socket.
    pub async fn connect(&self) -> anyhow::Result<UnixStream> {
        let stream = UnixStream::connect(&self.path).await.map_err(|err| {
            anyhow::Error::new(Unreachable(format!(
                "cannot connect to chimed at {}: {err}; {}",
                self.path.display(),
                self.hint(err.kind())
            )))
        })?;
        let server = stream
            .peer_cred()
            .with_context(|| {
                format!(
                    "refusing to talk to {}: cannot tell who serves it",
                    self.path.display()
                )
            })?
            .uid();
        check_server(
            &self.path,
            server,
            nix::unistd::getuid().as_raw(),
            user_name,
        )?;
        Ok(stream)
    }

    /// What to do when connecting failed with `kind`.
    fn hint(&self, kind: std::io::ErrorKind) -> String {
        use std::io::ErrorKind::{ConnectionRefused, NotFound, PermissionDenied};
        match (kind, &self.chosen) {
            (PermissionDenied, _) if self.path == system_socket() => {
                let me =
                    user_name(nix::unistd::getuid().as_raw()).unwrap_or_else(|| "USER".to_owned());
                format!(
                    "you may not use this socket; the system chimed's socket is for root and the \
                     chime group: ask an administrator to add you (`usermod -aG chime {me}`, \
                     then log in again), or run a chimed of your own (`systemctl --user enable \
                     --now chimed.socket`, or `chimed`)"
                )
            }
            (PermissionDenied, _) => "you may not use this socket; it belongs to another user: \
                                      point --socket or CHIME_SOCKET at your own chimed's"
                .into(),
            (NotFound | ConnectionRefused, Chosen::Given) => format!(
                "is chimed running there? start it with `chimed --socket {}`, or point --socket \
                 or CHIME_SOCKET at a running chimed's socket",
                self.path.display()
            ),
            (NotFound | ConnectionRefused, Chosen::Own) if self.path == system_socket() => {
                "is chimed running? start it with `systemctl start chimed` (or `chimed`), or \
                 point --socket or CHIME_SOCKET at its socket"
                    .into()
            }
            (NotFound | ConnectionRefused, Chosen::Own) => {
                "is your chimed running? start it with `chimed` (or `systemctl --user start \
                 chimed`), or point --socket or CHIME_SOCKET at its socket"
                    .into()
            }
            (NotFound | ConnectionRefused, Chosen::System { own: Ok(own) }) => format!(
                "your own chimed's socket {} does not exist, so chimectl tried the system \
                 chimed: start it with `systemctl start chimed`, or start your own with `chimed`",
                own.display()
            ),
            (NotFound | ConnectionRefused, Chosen::System { own: Err(why) }) => format!(
                "you have no socket of your own ({why}), so chimectl tried the system chimed: \
                 start it with `systemctl start chimed`, or run your own with `chimed --socket \
                 PATH` and point --socket or CHIME_SOCKET at it (or set XDG_RUNTIME_DIR)"
            ),
            _ => "is chimed running?".into(),
        }
    }
}

fn system_socket() -> PathBuf {
    PathBuf::from(SYSTEM_SOCKET)
}

/// Refuses a socket served by `server` unless that is root or `me`.
fn check_server(
    socket: &Path,
    server: u32,
    me: u32,
    name_of: impl Fn(u32) -> Option<String>,
) -> anyhow::Result<()> {
    if server == 0 || server == me {
        return Ok(());
    }
    let who = match name_of(server) {
        Some(name) => format!("uid {server} ({name})"),
        None => format!("uid {server}"),
    };
    bail!(
        "refusing to talk to {}: it is served by {who}, which is neither root nor you; someone \
         may have planted it: remove it, or point --socket at your chimed",
        socket.display()
    )
}

/// The name of `uid` in the passwd database.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: &str = "/run/chime/chimed.sock";
    const OWN: &str = "/run/user/1000/chime/chimed.sock";

    fn choose(given: Option<&str>, own: Option<&str>, existing: &[&str]) -> Socket {
        Socket::choose_from(
            1000,
            given.map(PathBuf::from),
            own.map(PathBuf::from)
                .ok_or(NoDefault::Runtime { uid: 1000 }),
            |path| existing.iter().any(|e| path == Path::new(e)),
        )
    }

    #[test]
    fn a_given_socket_wins() {
        let s = choose(Some("/srv/c.sock"), Some(OWN), &[OWN, SYSTEM]);
        assert_eq!(s.path, PathBuf::from("/srv/c.sock"));
        assert_eq!(s.chosen, Chosen::Given);
    }

    #[test]
    fn the_users_own_socket_when_it_exists_or_neither_does() {
        assert_eq!(choose(None, Some(OWN), &[OWN, SYSTEM]).path, Path::new(OWN));
        let neither = choose(None, Some(OWN), &[]);
        assert_eq!(neither.path, Path::new(OWN));
        assert_eq!(neither.chosen, Chosen::Own);
    }

    #[test]
    fn the_system_socket_when_the_user_has_none() {
        let missing = choose(None, Some(OWN), &[SYSTEM]);
        assert_eq!(missing.path, Path::new(SYSTEM));
        assert_eq!(
            missing.chosen,
            Chosen::System {
                own: Ok(PathBuf::from(OWN))
            }
        );
        // Planted sockets (issue 9): without a runtime directory there is no socket of one's
        // own, whatever exists elsewhere.
        let none = choose(None, None, &["/tmp/chime-1000/chimed.sock"]);
        assert_eq!(none.path, Path::new(SYSTEM));
        assert!(
            none.hint(std::io::ErrorKind::NotFound)
                .contains("XDG_RUNTIME_DIR")
        );
    }

    #[test]
    fn root_and_the_user_are_trusted_no_one_else() {
        let socket = Path::new("/tmp/x.sock");
        let names = |uid| (uid == 1001).then(|| "bob".to_string());
        assert!(check_server(socket, 0, 1000, names).is_ok());
        assert!(check_server(socket, 1000, 1000, names).is_ok());
        let err = check_server(socket, 1001, 1000, names)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "refusing to talk to /tmp/x.sock: it is served by uid 1001 (bob), which is \
                 neither root nor you"
            ),
            "{err}"
        );
        let err = check_server(socket, 1002, 1000, names)
            .unwrap_err()
            .to_string();
        assert!(err.contains("served by uid 1002, which"), "{err}");
        // Root talks to root's chimed only.
        assert!(check_server(socket, 1000, 0, names).is_err());
    }
}

/// chimed could not be reached (not running, no such socket, not allowed to use it, or not
/// answering): chimectl exits with [`Unreachable::EXIT`] rather than 1, so that scripts can tell
/// it from a refusal.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl Unreachable {
    /// `EX_UNAVAILABLE` of sysexits.h.
    pub const EXIT: u8 = 69;
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}
