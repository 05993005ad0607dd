//! A private PostgreSQL cluster for tests of fleet mode (issue 15): `initdb` into a temporary
//! directory, started with `pg_ctl`, reachable only through a Unix socket in a directory of its
//! own (`listen_addresses = ''`), durable as production is (`fsync`, `synchronous_commit` on).
//!
//! PostgreSQL refuses to run as root, so under root the cluster runs as a [`TestUser`] made for
//! it (removed with it); otherwise as the user running the tests. Clients connect as the
//! superuser `chime` through the socket (trust authentication: the socket's directory is the
//! cluster owner's and root's alone).
//!
//! [`Cluster::start`] returns `None`, after printing a visible `SKIPPED`, where the server's
//! programs are not installed (`.ci/run` installs Debian's `postgresql`). [`Cluster::crash`]
//! stops it as a power cut would leave it (`pg_ctl stop -m immediate`: no checkpoint, recovery
//! from the WAL at the next start) and [`Cluster::restart`] starts it again on the same files.
//! [`on_hosts`] runs work on several fleet hosts at once against it.

use crate::{TestUser, is_root, output_within, skipped};
use chime_daemon::store::kv::fleet::{self, Member};
use chime_daemon::store::kv::pg::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Longest `initdb`, a start or a stop may take on a loaded machine.
const PG_TIMEOUT: Duration = Duration::from_secs(120);

/// The newest installed server's program directory: Debian's `/usr/lib/postgresql/N/bin`, else
/// the directory on `PATH` that holds `pg_ctl` and `initdb` (other distributions).
pub fn server_bin() -> Option<PathBuf> {
    debian_server_bin().or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
    })
}

fn debian_server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A running private cluster; stopped (immediately) and removed when dropped.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    /// Holds `data/` (the cluster), `socket/` and `server.log`.
    dir: tempfile::TempDir,
    /// Who the server runs as: `None` for the user running the tests (shared with its
    /// standbys, which must reach its socket).
    owner: Option<std::sync::Arc<TestUser>>,
    running: bool,
}

impl Cluster {
    /// Creates and starts a cluster, or says why a test named `test` is skipped.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = server_bin() else {
            skipped(
                test,
                "PostgreSQL's server is not installed (apt-get install postgresql)",
            );
            return None;
        };
        let owner = is_root().then(|| std::sync::Arc::new(TestUser::create("pg")));
        let mut cluster = Self::unstarted(bin, owner);
        let data = cluster.data();
        cluster.run_ok(
            "initdb",
            &[
                "--pgdata",
                data.to_str().expect("a UTF-8 path"),
                "--username",
                "chime",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-instructions",
            ],
        );
        cluster.restart();
        Some(cluster)
    }

    /// A cluster's directories, given to its owner; nothing in them yet.
    fn unstarted(bin: PathBuf, owner: Option<std::sync::Arc<TestUser>>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("chime-pg-")
            .tempdir()
            .expect("a temporary directory");
        for sub in ["data", "socket"] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path).expect("create the cluster's directories");
            // The server refuses a data directory others may enter; the socket's directory
            // opens to one group, to admit a chimed run as a test user ([`Cluster::admit`]).
            let mode = if sub == "data" { 0o700 } else { 0o750 };
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("set the cluster's directories' modes");
        }
        if let Some(user) = &owner {
            for path in [
                dir.path(),
                &dir.path().join("data"),
                &dir.path().join("socket"),
            ] {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                    .expect("give the cluster's directories to its user");
            }
        }
        Self {
            bin,
            dir,
            owner,
            running: false,
        }
    }

    /// Lets members of group `gid` (a test user's chimed) reach the server's socket: the
    /// cluster's directory and its socket's become that group's (still nobody else's). Trust
    /// authentication makes whoever reaches the socket a superuser, so it admits one group.
    pub fn admit(&self, gid: u32) {
        for (path, mode) in [
            (self.dir.path().to_owned(), 0o710),
            (self.socket_dir(), 0o750),
        ] {
            std::os::unix::fs::chown(&path, None, Some(gid))
                .expect("give the directory to the group");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("open the directory to the group");
        }
    }

    /// A synchronous standby of this cluster, streaming its WAL and started: from now on a
    /// commit on this cluster returns only once the standby has it (`synchronous_standby_names
    /// = '*'`). [`Cluster::promote`] makes it the primary.
    pub fn standby(&self) -> Self {
        let mut standby = Self::unstarted(self.bin.clone(), self.owner.clone());
        let data = standby.data();
        let socket = self.socket_dir();
        standby.run_ok(
            "pg_basebackup",
            &[
                "--pgdata",
                data.to_str().expect("a UTF-8 path"),
                "--host",
                socket.to_str().expect("a UTF-8 path"),
                "--username",
                "chime",
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
            ],
        );
        standby.restart();
        self.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        self.sql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + PG_TIMEOUT;
        while self.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the standby did not become synchronous:\n{}",
                standby.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        standby
    }

    /// Makes a standby the primary (after its primary died), and waits until it accepts writes.
    pub fn promote(&mut self) {
        let data = self.data();
        self.run_ok(
            "pg_ctl",
            &[
                "promote",
                "--wait",
                "--pgdata",
                data.to_str().expect("a UTF-8 path"),
            ],
        );
    }

    /// The cluster's files.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's socket (libpq's `host`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// libpq's key-value connection string for the database `postgres` as the superuser
    /// `chime` (what the `postgres` crate takes; the socket's path may not be UTF-8-safe in a
    /// URL).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} user=chime dbname=postgres",
            self.socket_dir().display()
        )
    }

    /// A connection string for the database `postgres` as the superuser `chime`.
    pub fn url(&self) -> String {
        format!(
            "postgresql://chime@/postgres?host={}",
            self.socket_dir().display()
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The pid of the server's main process (the first line of `postmaster.pid`).
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the server on the cluster's files and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(!self.running, "the cluster is already running");
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=on -c synchronous_commit=on",
            self.socket_dir().display()
        );
        let (data, log) = (self.data(), self.dir.path().join("server.log"));
        let timeout = PG_TIMEOUT.as_secs().to_string();
        self.run_ok(
            "pg_ctl",
            &[
                "start",
                "--wait",
                "--timeout",
                &timeout,
                "--pgdata",
                data.to_str().expect("a UTF-8 path"),
                "--log",
                log.to_str().expect("a UTF-8 path"),
                "--options",
                &options,
            ],
        );
        self.running = true;
    }

    /// Stops the server at once, without a checkpoint, as a crash would.
    pub fn crash(&mut self) {
        self.stop("immediate");
    }

    fn stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data();
        let timeout = PG_TIMEOUT.as_secs().to_string();
        self.run_ok(
            "pg_ctl",
            &[
                "stop",
                "--wait",
                "--timeout",
                &timeout,
                "--mode",
                mode,
                "--pgdata",
                data.to_str().expect("a UTF-8 path"),
            ],
        );
        self.running = false;
    }

    /// Runs SQL through `psql` (unaligned, tuples only, stopping at the first error); its
    /// output, or a panic with psql's and the server's words.
    pub fn sql(&self, sql: &str) -> String {
        let mut psql = Command::new("psql");
        psql.args([
            "--no-psqlrc",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ])
        .arg(self.url());
        let out = output_within(psql, PG_TIMEOUT);
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed: {}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout)
            .expect("psql prints UTF-8")
            .trim_end()
            .to_owned()
    }

    /// One of the server's programs, as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.owner {
            Some(user) => user.command(&path),
            None => Command::new(path),
        }
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = output_within(cmd, PG_TIMEOUT);
        assert!(
            out.status.success(),
            "{program} {args:?} failed with {}: {}{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// Where the server's programs are.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            // Not `stop`: a failing test must not panic again while unwinding.
            let mut cmd = self.command("pg_ctl");
            cmd.args(["stop", "--wait", "--mode", "immediate", "--pgdata"])
                .arg(self.data());
            let _ = output_within(cmd, PG_TIMEOUT);
        }
        // The owner (a TestUser) is removed after the server has stopped, as fields drop.
    }
}

/// Runs `work` on `hosts` threads at once, each a fleet host `host-N` with its own connection
/// and a lease of ten minutes, started together once all have joined; the wall time from that
/// start and each host's result, in host order.
pub fn on_hosts<T: Send + 'static>(
    cluster: &Cluster,
    hosts: usize,
    work: impl Fn(&mut Connection, &Member, usize) -> T + Send + Sync + 'static,
) -> (Duration, Vec<T>) {
    let work = std::sync::Arc::new(work);
    let ready = std::sync::Arc::new(std::sync::Barrier::new(hosts + 1));
    let threads: Vec<_> = (0..hosts)
        .map(|i| {
            let (conninfo, work, ready) = (cluster.conninfo(), work.clone(), ready.clone());
            std::thread::spawn(move || {
                let mut connection = Connection::open(&conninfo).expect("connect");
                let member = fleet::join(
                    &mut connection,
                    &format!("host-{i}"),
                    Duration::from_secs(600),
                )
                .expect("join");
                ready.wait();
                work(&mut connection, &member, i)
            })
        })
        .collect();
    ready.wait();
    let began = Instant::now();
    let results: Vec<T> = threads
        .into_iter()
        .map(|t| t.join().expect("a host"))
        .collect();
    (began.elapsed(), results)
}
