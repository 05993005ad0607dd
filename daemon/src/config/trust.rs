//! Reading configuration and job files only when no one else could have written them, and
//! reading exactly what was checked.
//!
//! chimed, usually root, reads `chimed.toml` and the job files in `jobs.d/` beside it, and a job
//! file decides what runs as whom (root's may say `user = "..."`). Whoever can change one of those
//! files, or a directory on the way to them, can run anything as anyone. So chimed reads them only
//! where nobody but root and chimed's own user could have changed them, the way sudo and cron
//! treat their files, and it never checks one object and then reads another:
//!
//! - **One walk, by descriptors.** [`open_dir`] resolves the symbolic links *above* the directory
//!   that holds the files (realpath), then opens every directory from `/` down, each relative to
//!   the descriptor of the one above it with `O_NOFOLLOW`, and checks each with `fstat` on the
//!   descriptor it opened. A directory renamed, or replaced by a link, during the walk makes the
//!   walk fail; it cannot lead it elsewhere. The directory that holds the files is opened the
//!   same way and must not itself be a link; its files are listed through it and opened relative
//!   to it (`openat`), so renaming a directory above afterwards cannot redirect the reads.
//! - **Directories.** Each must belong to root or to chimed's user and be writable by no group
//!   and no other user ([`check_dir`]). A directory *above* may be writable by others if it has
//!   the sticky bit (`/tmp`, mode 1777): others can then neither rename nor remove what they do
//!   not own, and the directory below it must belong to root or chimed's user (as every one
//!   must). The directory that *holds* the files gets no such exception: others could add files
//!   to it.
//! - **Files** are opened once, `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`: a symbolic link is refused
//!   (its target could change between a check and a read, and its owner says nothing about the
//!   target's), and a FIFO opens at once instead of waiting for a writer, so it cannot hang
//!   chimed. `fstat` on that descriptor then decides ([`check_file`]): a regular file of at most
//!   [`FILE_MAX`] bytes, owned by root or chimed's user, writable by no group and no other user.
//!   The text is read from the same descriptor, at most `FILE_MAX + 1` bytes. (Before opening,
//!   `fstatat` without following links turns away what is plainly no regular file, so that a
//!   device node is not even opened; the decision is still the descriptor's.)
//! - **Missing is not refused.** A configuration file, its directory or `jobs.d` that does not
//!   exist gives "no file": the defaults, and no declared jobs.
//!
//! A refused directory refuses every file beneath it, with one error that names the directory,
//! its owner and mode, why, and the remedy (`chmod go-w DIR`, `chown root DIR`). Every error is a
//! [`FileError`] about the whole file or directory (line 0). chimed at start and on reload, and
//! `chimectl config check`, all read through here, so the three agree.
//!
//! What the links above the holding directory decide is only *which* checked directory is read:
//! every directory on the resolved path is checked, so they cannot bring in text that someone
//! else wrote.

use super::{FILE_MAX, FileError};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a file is to chimed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `chimed.toml`.
    Config,
    /// `jobs.d/NAME.toml`.
    Job,
}

impl Kind {
    /// What chimed accepts, as the end of a sentence.
    fn only_regular(self) -> &'static str {
        match self {
            Kind::Config => "chimed reads its configuration only from a regular file",
            Kind::Job => "chimed reads job files only as regular files",
        }
    }
}

/// Where a directory is on the walk: above the files, or the one that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A directory on the way: may be writable by others if it is sticky.
    Above,
    /// The directory whose files are read (the configuration file's, `jobs.d`).
    Holder,
}

/// A directory that holds configuration or job files, opened through checked directories (see
/// the module documentation). Files are read relative to its descriptor.
#[derive(Debug)]
pub struct Dir {
    /// `O_PATH`: enough to open files relative to it, and to `fstat` it.
    fd: OwnedFd,
    /// The path as the caller named it, made absolute (messages and job sources use it).
    path: PathBuf,
    daemon_uid: u32,
}

/// Opens `path` as a directory holding configuration or job files, checking it and every
/// directory above it. `Ok(None)`: it (or a directory above it) does not exist. Errors name the
/// directory that was refused.
pub fn open_dir(path: &Path, daemon_uid: u32) -> Result<Option<Dir>, FileError> {
    let absolute = std::path::absolute(path)
        .map_err(|err| FileError::whole(path, format!("cannot make the path absolute: {err}")))?;
    let path = absolute.as_path();
    // A path that ends in `..` (or is `/`) has no last name to open without following: resolve
    // it whole first.
    let resolved;
    let path_named = match path.file_name() {
        Some(_) => path,
        None => match std::fs::canonicalize(path) {
            Ok(real) => {
                resolved = real;
                &resolved
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(FileError::whole(path, format!("cannot resolve it: {err}"))),
        },
    };
    let above = path_named.parent().unwrap_or(Path::new("/"));
    let above = match std::fs::canonicalize(above) {
        Ok(real) => real,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(FileError::whole(above, format!("cannot resolve it: {err}"))),
    };
    let root = Path::new("/");
    let mut fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| FileError::whole(root, format!("cannot open it: {}", err.desc())))?;
    let Some(name) = path_named.file_name() else {
        // The holder is `/` itself.
        let stat = fstat(&fd).map_err(|err| stat_error(root, err))?;
        check_dir(&stat, root, Role::Holder, daemon_uid)?;
        return Ok(Some(Dir {
            fd,
            path: path.into(),
            daemon_uid,
        }));
    };
    let stat = fstat(&fd).map_err(|err| stat_error(root, err))?;
    check_dir(&stat, root, Role::Above, daemon_uid)?;
    let mut at = PathBuf::from("/");
    for component in above.components() {
        // A resolved path has only the root and names.
        let Component::Normal(step) = component else {
            continue;
        };
        at.push(step);
        fd = match open_checked_dir(&fd, step, &at, Role::Above, daemon_uid)? {
            Some(next) => next,
            None => return Ok(None),
        };
    }
    Ok(
        open_checked_dir(&fd, name, path, Role::Holder, daemon_uid)?.map(|fd| Dir {
            fd,
            path: path.into(),
            daemon_uid,
        }),
    )
}

/// Reads the file at `path` through [`open_dir`] of its directory and [`Dir::read`].
/// `Ok(None)`: it does not exist.
pub fn read_file(path: &Path, daemon_uid: u32, kind: Kind) -> Result<Option<String>, FileError> {
    let Some(name) = path.file_name() else {
        return Err(FileError::whole(path, "not the path of a file"));
    };
    match open_dir(path.parent().unwrap_or(Path::new("/")), daemon_uid)? {
        Some(dir) => dir.read(name, kind),
        None => Ok(None),
    }
}

impl Dir {
    /// The path as it was named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` in this directory as a directory holding files, checked as one
    /// (`Ok(None)`: it does not exist).
    pub fn subdir(&self, name: &str) -> Result<Option<Dir>, FileError> {
        let path = self.path.join(name);
        Ok(open_checked_dir(
            &self.fd,
            OsStr::new(name),
            &path,
            Role::Holder,
            self.daemon_uid,
        )?
        .map(|fd| Dir {
            fd,
            path,
            daemon_uid: self.daemon_uid,
        }))
    }

    /// The names of the entries in this directory (without `.` and `..`), unsorted.
    pub fn names(&self) -> Result<Vec<OsString>, FileError> {
        let cannot =
            |err: Errno| FileError::whole(&self.path, format!("cannot list it: {}", err.desc()));
        // `.` of the checked descriptor: this very directory, whatever its path now leads to.
        let mut listing = nix::dir::Dir::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(cannot)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(cannot)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Reads the file `name` in this directory: opened once without following a link or waiting
    /// on a FIFO, checked with `fstat` on that descriptor ([`check_file`]), and read from it, at
    /// most [`FILE_MAX`] bytes. `Ok(None)`: there is no such file (it vanished).
    pub fn read(&self, name: &OsStr, kind: Kind) -> Result<Option<String>, FileError> {
        let path = self.path.join(name);
        // Turn away what is plainly not a regular file without opening it (a device node).
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                if file_type(&stat) != SFlag::S_IFREG {
                    return Err(not_regular(&path, &stat, kind));
                }
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(err) => return Err(stat_error(&path, err)),
        }
        let fd = match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            // Replaced since the look above: say what it is now.
            Err(err) => {
                return Err(
                    match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(stat) if file_type(&stat) != SFlag::S_IFREG => {
                            not_regular(&path, &stat, kind)
                        }
                        _ if err == Errno::ELOOP => symlink_error(&path, kind),
                        _ => FileError::whole(&path, format!("cannot open it: {}", err.desc())),
                    },
                );
            }
        };
        let stat = fstat(&fd).map_err(|err| stat_error(&path, err))?;
        check_file(&stat, &path, self.daemon_uid, kind)?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(FILE_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| FileError::whole(&path, format!("cannot read it: {err}")))?;
        if bytes.len() as u64 > FILE_MAX {
            return Err(FileError::whole(
                &path,
                format!(
                    "grew past {FILE_MAX} bytes while being read; a file may have at most {FILE_MAX}"
                ),
            ));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| FileError::whole(&path, "not UTF-8 text; TOML files are UTF-8"))
    }
}

/// Opens `name` in `dir` as a directory, without following a link, and checks it in its `role`.
/// `Ok(None)`: it does not exist.
fn open_checked_dir(
    dir: impl AsFd,
    name: &OsStr,
    path: &Path,
    role: Role,
    daemon_uid: u32,
) -> Result<Option<OwnedFd>, FileError> {
    let dir = dir.as_fd();
    match openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let stat = fstat(&fd).map_err(|err| stat_error(path, err))?;
            check_dir(&stat, path, role, daemon_uid)?;
            Ok(Some(fd))
        }
        Err(Errno::ENOENT) => Ok(None),
        // A link, or something else that is no directory.
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            let is_link = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|stat| file_type(&stat) == SFlag::S_IFLNK);
            Err(FileError::whole(
                path,
                if is_link {
                    "is a symbolic link; chimed reaches its configuration and job files only through real directories, so that a changed link cannot lead it elsewhere (name the directory the link points to, or put the directory in the link's place)"
                } else {
                    "not a directory"
                },
            ))
        }
        Err(err) => Err(FileError::whole(
            path,
            format!("cannot open it: {}", err.desc()),
        )),
    }
}

/// Checks a directory on the way to configuration or job files (see the module documentation):
/// owned by root or chimed's user, and writable by no group or other user unless it is above the
/// files and sticky.
pub fn check_dir(
    stat: &FileStat,
    path: &Path,
    role: Role,
    daemon_uid: u32,
) -> Result<(), FileError> {
    let owner = stat.st_uid;
    let mode = stat.st_mode & 0o7777;
    let shown = path.display();
    if owner != 0 && owner != daemon_uid {
        let remedy = if daemon_uid == 0 {
            format!("run `chown root {shown}`")
        } else {
            format!(
                "keep the configuration in directories that root or uid {daemon_uid} (chimed's user) owns"
            )
        };
        return Err(FileError::whole(
            path,
            format!(
                "directory owned by uid {owner} (mode {mode:04o}): its owner decides what runs as whom, so chimed reads no file beneath it; {remedy}"
            ),
        ));
    }
    let sticky_above = role == Role::Above && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_above {
        return Err(FileError::whole(
            path,
            format!(
                "directory writable by group or others (owner uid {owner}, mode {mode:04o}): anyone who can write it decides what runs as whom, so chimed reads no file beneath it; run `chmod go-w {shown}`"
            ),
        ));
    }
    Ok(())
}

/// Checks an opened configuration or job file: a regular file of at most [`FILE_MAX`] bytes,
/// owned by root or chimed's user, writable by no group or other user.
pub fn check_file(
    stat: &FileStat,
    path: &Path,
    daemon_uid: u32,
    kind: Kind,
) -> Result<(), FileError> {
    if file_type(stat) != SFlag::S_IFREG {
        return Err(not_regular(path, stat, kind));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > FILE_MAX {
        return Err(too_large(path, size));
    }
    if stat.st_uid != daemon_uid && stat.st_uid != 0 {
        return Err(FileError::whole(
            path,
            format!(
                "owned by uid {}; it must belong to uid {daemon_uid} (chimed's user) or root",
                stat.st_uid
            ),
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(FileError::whole(
            path,
            format!(
                "writable by group or others; run `chmod go-w {}` (it decides what runs as whom)",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

fn symlink_error(path: &Path, kind: Kind) -> FileError {
    FileError::whole(
        path,
        format!(
            "is a symbolic link; {} (copy the file here instead)",
            kind.only_regular()
        ),
    )
}

fn not_regular(path: &Path, stat: &FileStat, kind: Kind) -> FileError {
    let what = match file_type(stat) {
        SFlag::S_IFLNK => return symlink_error(path, kind),
        SFlag::S_IFIFO => "a FIFO (named pipe)",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "no regular file",
    };
    FileError::whole(
        path,
        format!(
            "is {what}; {} (remove it, or put a regular file in its place)",
            kind.only_regular()
        ),
    )
}

fn too_large(path: &Path, size: u64) -> FileError {
    FileError::whole(
        path,
        format!("{size} bytes; a file may have at most {FILE_MAX}"),
    )
}

fn stat_error(path: &Path, err: Errno) -> FileError {
    FileError::whole(path, format!("cannot examine it: {}", err.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    /// A private directory under the system's temporary directory (sticky `/tmp` above it).
    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let real = std::fs::canonicalize(dir.path()).expect("the temp dir resolves");
        chmod(&real, 0o755);
        (dir, real)
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write a file");
        chmod(path, 0o644);
    }

    fn read(path: &Path) -> Result<Option<String>, String> {
        read_file(path, uid(), Kind::Job).map_err(|e| e.to_string())
    }

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_is_none() {
        let (_guard, dir) = tmp();
        let file = dir.join("a.toml");
        write(&file, "timer = true\n");
        assert_eq!(read(&file), Ok(Some("timer = true\n".into())));
        assert_eq!(read(&dir.join("none.toml")), Ok(None));
        assert_eq!(read(&dir.join("no/such/dir/a.toml")), Ok(None));
        let opened = open_dir(&dir, uid())
            .unwrap()
            .expect("the directory exists");
        assert_eq!(opened.names().unwrap(), [OsString::from("a.toml")]);
        assert!(open_dir(&dir.join("jobs.d"), uid()).unwrap().is_none());
    }

    #[test]
    fn a_symbolic_link_is_refused_even_to_a_good_file() {
        let (_guard, dir) = tmp();
        write(&dir.join("good"), "timer = true\n");
        std::os::unix::fs::symlink(dir.join("good"), dir.join("x.toml")).unwrap();
        let path = dir.join("x.toml").display().to_string();
        assert_eq!(
            read(&dir.join("x.toml")),
            Err(format!(
                "{path}:0: is a symbolic link; chimed reads job files only as regular files (copy the file here instead)"
            ))
        );
        let err = read_file(&dir.join("x.toml"), uid(), Kind::Config)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("is a symbolic link; chimed reads its configuration only from a regular file (copy the file here instead)"),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let (_guard, dir) = tmp();
        let fifo = dir.join("p.toml");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let err = read(&fifo).unwrap_err();
        assert!(err.ends_with(":0: is a FIFO (named pipe); chimed reads job files only as regular files (remove it, or put a regular file in its place)"), "{err}");
        // Also when the look before opening missed it: the descriptor decides.
        let fd = openat(
            open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap(),
            "p.toml",
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .unwrap();
        let err = check_file(&fstat(&fd).unwrap(), &fifo, uid(), Kind::Job).unwrap_err();
        assert!(err.message.starts_with("is a FIFO"), "{err}");
    }

    #[test]
    fn files_others_may_write_or_too_large_are_refused() {
        let (_guard, dir) = tmp();
        let file = dir.join("w.toml");
        write(&file, "timer = true\n");
        chmod(&file, 0o664);
        let err = read(&file).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{0}:0: writable by group or others; run `chmod go-w {0}` (it decides what runs as whom)",
                file.display()
            )
        );
        let big = dir.join("big.toml");
        write(&big, &"#".repeat(FILE_MAX as usize + 1));
        let err = read(&big).unwrap_err();
        assert!(
            err.ends_with(&format!(
                ":0: {} bytes; a file may have at most {FILE_MAX}",
                FILE_MAX + 1
            )),
            "{err}"
        );
        write(&big, &"#".repeat(FILE_MAX as usize));
        assert!(read(&big).is_ok(), "FILE_MAX bytes are fine");
        let dir_entry = dir.join("d.toml");
        std::fs::create_dir(&dir_entry).unwrap();
        assert!(
            read(&dir_entry)
                .unwrap_err()
                .contains(":0: is a directory; ")
        );
    }

    #[test]
    fn a_directory_others_may_write_refuses_its_files() {
        let (_guard, dir) = tmp();
        let jobs = dir.join("jobs.d");
        std::fs::create_dir(&jobs).unwrap();
        write(&jobs.join("a.toml"), "timer = true\n");
        chmod(&jobs, 0o775);
        let err = read(&jobs.join("a.toml")).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{0}:0: directory writable by group or others (owner uid {1}, mode 0775): anyone who can write it decides what runs as whom, so chimed reads no file beneath it; run `chmod go-w {0}`",
                jobs.display(),
                uid()
            )
        );
        // Sticky does not excuse the directory that holds the files: others could add some.
        chmod(&jobs, 0o1777);
        assert!(
            read(&jobs.join("a.toml"))
                .unwrap_err()
                .contains("mode 1777")
        );
        chmod(&jobs, 0o755);
        assert!(read(&jobs.join("a.toml")).unwrap().is_some());
        // Above the files, sticky is fine (like /tmp), and writable without it is not.
        chmod(&dir, 0o1777);
        assert!(read(&jobs.join("a.toml")).unwrap().is_some());
        chmod(&dir, 0o777);
        let err = read(&jobs.join("a.toml")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:0: directory writable by group or others",
                dir.display()
            )),
            "{err}"
        );
        chmod(&dir, 0o755);
    }

    #[test]
    fn a_linked_holding_directory_is_refused_but_links_above_are_resolved() {
        let (_guard, dir) = tmp();
        let real = dir.join("real");
        std::fs::create_dir_all(real.join("jobs.d")).unwrap();
        write(&real.join("jobs.d/a.toml"), "timer = true\n");
        std::os::unix::fs::symlink(&real, dir.join("above")).unwrap();
        assert!(read(&dir.join("above/jobs.d/a.toml")).unwrap().is_some());
        std::os::unix::fs::symlink(real.join("jobs.d"), dir.join("jobs.d")).unwrap();
        let err = read(&dir.join("jobs.d/a.toml")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:0: is a symbolic link; chimed reaches",
                dir.join("jobs.d").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn directories_and_files_of_other_users_are_refused() {
        let (_guard, dir) = tmp();
        let jobs = dir.join("jobs.d");
        std::fs::create_dir(&jobs).unwrap();
        write(&jobs.join("a.toml"), "timer = true\n");
        // As root, give the temp dir to a uid no one has; otherwise be a chimed of another uid.
        let (daemon_uid, owner) = if uid() == 0 {
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(54_321)), None).unwrap();
            (0, 54_321)
        } else {
            (uid() + 1, uid())
        };
        let err = read_file(&jobs.join("a.toml"), daemon_uid, Kind::Job)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}:0: directory owned by uid {owner} (mode 0755): its owner decides what runs as whom, so chimed reads no file beneath it; ",
                dir.display()
            )),
            "{err}"
        );
        if uid() == 0 {
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
            nix::unistd::chown(&jobs, Some(nix::unistd::Uid::from_raw(54_321)), None).unwrap();
            let err = read(&jobs.join("a.toml")).unwrap_err();
            assert!(
                err.ends_with(&format!("run `chown root {}`", jobs.display())),
                "{err}"
            );
            nix::unistd::chown(&jobs, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
            nix::unistd::chown(
                &jobs.join("a.toml"),
                Some(nix::unistd::Uid::from_raw(54_321)),
                None,
            )
            .unwrap();
            let err = read(&jobs.join("a.toml")).unwrap_err();
            assert!(
                err.ends_with(
                    ":0: owned by uid 54321; it must belong to uid 0 (chimed's user) or root"
                ),
                "{err}"
            );
        }
    }
}
