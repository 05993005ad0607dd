//! The fuzz harness: bytes a client could send, through chimed's own decoding and request handlers.
//!
//! # An input
//!
//! The first byte chooses who is asking (bit 0: chimed's own user, an administrator; or `nobody`,
//! a user held to the per-user limits). The rest is what a client writes on its connection, and
//! goes the way chimed's connection task takes it ([`chime_daemon::connection`]):
//!
//! 1. frames are cut by chimed's codec, [`frame_codec`] with [`MAX_REQUEST_FRAME`] (a length
//!    prefix over the bound is an unreadable frame: answered, then the connection ends);
//! 2. the first frame is the handshake, judged by [`connection::greet`]; a refused one ends it;
//! 3. every later frame is decoded by [`codec::decode_request`] for the version agreed; a request
//!    is answered by the real handler, [`requests::handle`]; a request this build does not know
//!    is answered `unsupported`; a frame that does not decode is answered and ends the
//!    connection. A watch ends the input too: it takes over the connection's socket, which the
//!    harness does not have.
//!
//! Every answer is encoded by [`connection::reply_payload`] for the version agreed, as chimed
//! encodes it.
//!
//! # What must hold
//!
//! - nothing panics, in the harness or in any of chimed's threads (libfuzzer-sys makes any panic
//!   an abort, so a panic in the engine thread or a connection task is a crash too);
//! - decoding a frame is deterministic, and a decoded request encodes and decodes back to itself;
//! - every reply encodes, fits in a frame ([`MAX_REPLY_FRAME`]) without the `too_large` stand-in,
//!   and decodes, as a client decodes it, back to the reply;
//! - no request but a `wait` takes longer than [`DEADLINE`];
//! - after an input that reached a handler, chimed still answers `status`.
//!
//! # The daemon
//!
//! One chimed per fuzzing process, started by [`chime_daemon::Daemon::start`] as `chimed` starts
//! one, on a state directory of its own (in `/dev/shm` when there is one: commits are then
//! cheap), with `changes_per_second` raised so that the user's changes are not paced. No program
//! can be executed in the process ([`sandbox`]): runs end as spawn errors. The jobs an input
//! added are removed after it through the same handler (`rm`), which also answers the `wait`s
//! on them, so that the state stays small; everything else an input changed (pauses, queue
//! limits) stays, and every [`RESTART_EVERY`] inputs the daemon is stopped and a new one started
//! on a new directory.

pub mod sandbox;
pub mod seeds;

use bytes::BytesMut;
use chime_daemon::Daemon;
use chime_daemon::config::{Args, Config};
use chime_daemon::connection::{self, Greeting};
use chime_daemon::context::Context;
use chime_daemon::requests::{self, Peer};
use chime_proto::codec::{self, FrameError, frame_codec};
use chime_proto::{
    ErrorCode, ErrorReply, Handshake, JobId, JobRef, MAX_REPLY_FRAME, MAX_REQUEST_FRAME,
    ReplyFrame, Request, RequestFrame, Response, ServerMessage,
};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::codec::Decoder;

/// The longest any request but a `wait` may take before it counts as a hang.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long a `wait` may take once the jobs of its input are removed (which answers it: on
/// /dev/shm that takes well under a millisecond). A wait on a job of an earlier input may never
/// end and is abandoned after this, as a client abandons one by closing its connection; at
/// 250 ms, inputs with such waits had the fuzzer idle 80% of the time after an hour.
const WAIT_GRACE: Duration = Duration::from_millis(20);

/// Inputs between two restarts of the daemon on a new state directory.
pub const RESTART_EVERY: u64 = 50_000;

/// The uid of `nobody`, the user who is not an administrator.
const NOBODY: u32 = 65_534;

/// `chimed.toml` of the fuzzed daemon: the user's changes are not paced (a second's worth is a
/// burst of a million), so that an input never sleeps.
const CONFIG: &str = "[limits]\nchanges_per_second = 1000000\n";

/// What the inputs reached, printed when the process exits ([`remove_at_exit`]).
#[derive(Debug)]
struct Counts {
    inputs: AtomicU64,
    greeted: AtomicU64,
    requests: AtomicU64,
    answered_ok: AtomicU64,
    changes_ok: AtomicU64,
}

static COUNTS: Counts = Counts {
    inputs: AtomicU64::new(0),
    greeted: AtomicU64::new(0),
    requests: AtomicU64::new(0),
    answered_ok: AtomicU64::new(0),
    changes_ok: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One line: how far the inputs of this process went.
pub fn counts() -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "chime-fuzz: {} inputs, {} past the handshake; {} requests handled, {} answered ok, of which {} accepted changes",
        get(&COUNTS.inputs),
        get(&COUNTS.greeted),
        get(&COUNTS.requests),
        get(&COUNTS.answered_ok),
        get(&COUNTS.changes_ok),
    )
}

/// A chimed, and who asks it.
#[derive(Debug)]
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    daemon: Option<Daemon>,
    /// This process's directory; each daemon gets a new directory in it.
    root: PathBuf,
    started: u64,
    inputs: u64,
    admin: Peer,
    user: Peer,
}

impl Harness {
    /// Forbids executing programs ([`sandbox`]), then starts a chimed on a new directory in
    /// `root`.
    ///
    /// Panics: the sandbox or the daemon cannot be set up; nothing can be fuzzed then.
    pub fn new(root: PathBuf) -> Self {
        sandbox::forbid_exec().expect("cannot forbid executing programs; refusing to fuzz");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("chimed")
            .build()
            .expect("a tokio runtime");
        std::fs::create_dir_all(&root).expect("the fuzzing directory");
        let mut harness = Self {
            runtime,
            daemon: None,
            root,
            started: 0,
            inputs: 0,
            admin: Peer { uid: 0, user: None },
            user: Peer {
                uid: NOBODY,
                user: None,
            },
        };
        harness.restart();
        harness
    }

    /// Stops the daemon, if one runs, and starts a new one on a new state directory.
    fn restart(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let dir = daemon.context.info.state_dir.clone();
            self.runtime
                .block_on(daemon.stop())
                .expect("the daemon stops");
            let _ = std::fs::remove_dir_all(dir.parent().expect("a daemon directory"));
        }
        self.started += 1;
        let dir = self.root.join(format!("daemon-{}", self.started));
        let daemon = self.runtime.block_on(start(&dir));
        let uid = daemon.context.info.uid;
        self.admin = Peer::of(uid);
        self.user = Peer::of(if uid == NOBODY { NOBODY - 1 } else { NOBODY });
        self.daemon = Some(daemon);
    }

    /// Runs one input (see the crate docs).
    pub fn run(&mut self, data: &[u8]) {
        self.inputs += 1;
        count(&COUNTS.inputs);
        if self.inputs.is_multiple_of(RESTART_EVERY) {
            self.restart();
        }
        let Some((&who, stream)) = data.split_first() else {
            return;
        };
        let peer = match who & 1 {
            0 => self.admin.clone(),
            _ => self.user.clone(),
        };
        let context = Arc::clone(&self.daemon.as_ref().expect("a daemon runs").context);
        let admin = self.admin.clone();
        self.runtime
            .block_on(converse(context, peer, admin, stream));
    }
}

/// Starts a chimed whose configuration, socket and state are all in `dir`.
async fn start(dir: &Path) -> Daemon {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .expect("the daemon's directory");
    let config_path = dir.join("chimed.toml");
    std::fs::write(&config_path, CONFIG).expect("the configuration file");
    let state = dir.join("state");
    let socket = dir.join("chimed.sock");
    let args = Args::parse_from([
        "chimed".as_ref(),
        "--config".as_ref(),
        config_path.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--socket".as_ref(),
        socket.as_os_str(),
        // Small: the state of one input is removed after it, and the log is bounded anyway.
        "--cache-mib".as_ref(),
        "16".as_ref(),
        "--event-retention".as_ref(),
        "1000".as_ref(),
    ]);
    let uid = std::fs::metadata(dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("the daemon's directory");
    let settings = chime_daemon::config::file::read(&config_path, uid).expect("chimed.toml");
    let config = Config::resolve(&args, &settings).expect("a configuration");
    let (daemon, ()) = Daemon::start(&config, args, None, || Ok(()))
        .await
        .expect("chimed starts");
    daemon
}

/// One connection's worth of bytes from `peer`.
async fn converse(context: Arc<Context>, peer: Peer, admin: Peer, stream: &[u8]) {
    let mut codec = frame_codec(MAX_REQUEST_FRAME);
    let mut bytes = BytesMut::from(stream);
    let version = match next_frame(&mut codec, &mut bytes) {
        // An unreadable first frame closes the connection without an answer.
        Next::End | Next::Unreadable(_) => return,
        Next::Frame(hello) => match connection::greet(&hello) {
            Greeting::Welcome { version, .. } => {
                count(&COUNTS.greeted);
                check_handshake(connection::welcome(version, peer.uid));
                version
            }
            Greeting::TooOld { refusal, .. } | Greeting::NotHello { refusal } => {
                return check_handshake(Err(refusal.into()));
            }
        },
    };
    let peer = Arc::new(peer);
    let mut added: Vec<JobId> = Vec::new();
    let mut waits = Vec::new();
    let mut handled = false;
    loop {
        let frame = match next_frame(&mut codec, &mut bytes) {
            Next::Frame(frame) => frame,
            Next::End => break,
            Next::Unreadable(err) => {
                let message = format!("unreadable frame: {err}");
                check_reply(
                    version,
                    0,
                    Err(ErrorReply::new(ErrorCode::TooLarge, message)),
                );
                break;
            }
        };
        let decoded = codec::decode_request(version, &frame);
        check_deterministic(version, &frame, &decoded);
        match decoded {
            // A watch takes the connection over (crate::watch): it needs the socket.
            Ok(RequestFrame {
                request: Request::Watch(_),
                ..
            }) => break,
            Ok(RequestFrame { id, request }) => {
                handled = true;
                count(&COUNTS.requests);
                if let Request::Wait(_) = request {
                    // Answered when the job's run settles, or when it is removed below.
                    let (context, peer) = (Arc::clone(&context), Arc::clone(&peer));
                    waits.push((
                        id,
                        tokio::spawn(
                            async move { requests::handle(&context, &peer, request).await },
                        ),
                    ));
                    continue;
                }
                let change = requests::is_change(&request);
                let result =
                    tokio::time::timeout(DEADLINE, requests::handle(&context, &peer, request))
                        .await
                        .unwrap_or_else(|_| panic!("request {id}: no answer within {DEADLINE:?}"));
                if let Ok(response) = &result {
                    count(&COUNTS.answered_ok);
                    if change {
                        count(&COUNTS.changes_ok);
                    }
                    if let Response::Added(new) = response {
                        added.push(new.id);
                    }
                }
                check_reply(version, id, result);
            }
            Err(FrameError::UnknownRequest { id, variant }) => {
                check_reply(version, id, Err(connection::unsupported(variant)));
            }
            Err(err) => {
                check_reply(
                    version,
                    0,
                    Err(ErrorReply::new(ErrorCode::BadRequest, err.to_string())),
                );
                break;
            }
        }
    }
    if !handled {
        return;
    }
    let status = tokio::time::timeout(
        DEADLINE,
        requests::handle(&context, &admin, Request::Status),
    )
    .await
    .expect("status answers in time");
    assert!(
        status.is_ok(),
        "chimed no longer answers status: {status:?}"
    );
    // Keep the state small: the jobs this input added go (which answers the waits on them).
    for id in added {
        let removed = tokio::time::timeout(
            DEADLINE,
            requests::handle(&context, &admin, Request::Remove(JobRef::Id(id))),
        )
        .await
        .expect("rm answers in time");
        check_reply(version, u64::MAX, removed);
    }
    for (id, mut wait) in waits {
        // A wait on a job of an earlier input, or on one still running, may not end: abandoned,
        // as a client abandons it by closing its connection.
        let Ok(answer) = tokio::time::timeout(WAIT_GRACE, &mut wait).await else {
            wait.abort();
            continue;
        };
        let answer = answer.expect("a wait's task does not fail");
        if answer.is_ok() {
            count(&COUNTS.answered_ok);
        }
        check_reply(version, id, answer);
    }
}

/// What the connection's reader yields next.
enum Next {
    Frame(BytesMut),
    /// The bytes ended (a frame cut short at the end is no frame).
    End,
    /// A length prefix over the bound: chimed answers `too_large` and closes the connection.
    Unreadable(std::io::Error),
}

fn next_frame(codec: &mut tokio_util::codec::LengthDelimitedCodec, bytes: &mut BytesMut) -> Next {
    match codec.decode(bytes) {
        Ok(Some(frame)) => {
            assert!(
                frame.len() <= MAX_REQUEST_FRAME,
                "the codec let through a frame of {} bytes",
                frame.len()
            );
            Next::Frame(frame)
        }
        Ok(None) => Next::End,
        Err(err) => Next::Unreadable(err),
    }
}

/// Decoding the same frame again gives the same answer, and a decoded request encodes and
/// decodes back to itself.
fn check_deterministic(version: u32, frame: &[u8], decoded: &Result<RequestFrame, FrameError>) {
    let again = codec::decode_request(version, frame);
    match (decoded, &again) {
        (Ok(first), Ok(second)) => assert_eq!(first, second, "decoding is not deterministic"),
        (Err(first), Err(second)) => assert_eq!(
            first.to_string(),
            second.to_string(),
            "decoding is not deterministic"
        ),
        _ => panic!("decoding is not deterministic: {decoded:?} then {again:?}"),
    }
    if let Ok(request) = decoded {
        let encoded = codec::encode(request).expect("a decoded request encodes");
        let back = codec::decode_request(version, &encoded).expect("a re-encoded request decodes");
        assert_eq!(&back, request, "a request does not survive encoding");
    }
}

/// A handshake answer encodes and decodes back to itself.
fn check_handshake(handshake: Handshake) {
    let payload = codec::encode(&handshake).expect("a handshake encodes");
    assert!(payload.len() <= MAX_REPLY_FRAME);
    let back: Handshake = codec::decode(&payload).expect("a client decodes the handshake");
    assert_eq!(back, handshake, "a handshake does not survive encoding");
}

/// The reply to request `id` encodes as chimed encodes it, fits in a frame as it is (not
/// replaced by the `too_large` stand-in), and decodes, as a client decodes it, back to itself.
fn check_reply(version: u32, id: u64, result: Result<Response, ErrorReply>) {
    let message = ServerMessage::Reply(ReplyFrame { id, result });
    let ServerMessage::Reply(ReplyFrame { result, .. }) = &message else {
        unreachable!("built above");
    };
    let payload =
        connection::reply_payload(version, id, result.clone()).expect("every reply encodes");
    assert!(payload.len() <= MAX_REPLY_FRAME);
    let back: ServerMessage = codec::decode(&payload).expect("a client decodes every reply");
    if back != message {
        let describe = |m: &ServerMessage| format!("{m:?}").chars().take(2000).collect::<String>();
        panic!(
            "a reply does not survive encoding (or did not fit in a frame):\n  sent {}\n  got  {}",
            describe(&message),
            describe(&back)
        );
    }
}

/// A directory for this process's daemons: in `/dev/shm` when there is one (a commit's `fsync`
/// costs nothing there), named after the process, after removing those of processes that are
/// gone.
pub fn process_dir() -> PathBuf {
    let base = ["/dev/shm", "/tmp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chime-fuzz."))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    base.join(format!("chime-fuzz.{}", std::process::id()))
}

/// Removes `dir`, and prints [`counts`], when the process exits (libFuzzer ends with `exit(3)`, which runs no
/// destructor of Rust's).
#[allow(unsafe_code)]
pub fn remove_at_exit(dir: PathBuf) {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    extern "C" fn remove() {
        eprintln!("{}", counts());
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if DIR.set(dir).is_ok() {
        // SAFETY: registers a function that takes no argument and does not unwind (the removal's
        // error is ignored).
        unsafe { libc::atexit(remove) };
    }
}
