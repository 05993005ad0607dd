//! Compatibility: frames encoded by released versions must still decode to the same values.
//!
//! Each file under `fixtures/v<N>/` holds the hex payload of one frame as protocol version N
//! encoded it. The test decodes every file and compares it with the value built here, and checks
//! that encoding the value gives the same bytes. A change to a wire type that would break an old
//! client or daemon therefore fails this test.
//!
//! Recording: a fixture that is missing fails the test unless `CHIME_BLESS=1` is set, which
//! writes missing files only. Existing files are never rewritten: they are what old peers send.

use chime_proto::codec::{decode, encode};
use chime_proto::*;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;
use std::path::PathBuf;

fn check<T>(version: u32, name: &str, value: T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("v{version}"))
        .join(format!("{name}.hex"));
    let encoded = encode(&value).expect("fixture values encode");
    let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(_) if std::env::var_os("CHIME_BLESS").is_some() => {
            std::fs::write(&path, format!("{hex}\n")).expect("write fixture");
            hex.clone()
        }
        Err(err) => panic!(
            "missing fixture {} ({err}); record it with CHIME_BLESS=1 cargo test -p chime-proto",
            path.display()
        ),
    };
    let bytes: Vec<u8> = (0..stored.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&stored[i..i + 2], 16).expect("fixture is hex"))
        .collect();
    let decoded: T = decode(&bytes)
        .unwrap_or_else(|err| panic!("fixture {name} (v{version}) no longer decodes: {err}"));
    assert_eq!(
        decoded, value,
        "fixture {name} (v{version}) decodes differently"
    );
    assert_eq!(
        hex, stored,
        "fixture {name} (v{version}) encodes differently now"
    );
}

fn spec() -> JobSpec {
    JobSpec {
        name: Some("backup".into()),
        command: Command::Argv(vec!["/usr/bin/rsync".into(), "-a".into(), "/src".into()]),
        cwd: "/home/ann".into(),
        env: vec![("LANG".into(), "C.UTF-8".into())],
        schedule: Schedule::At(1_795_000_000_000),
    }
}

fn summary() -> JobSummary {
    JobSummary {
        id: JobId(42),
        name: Some("backup".into()),
        owner_uid: 1000,
        state: JobState::Failed,
        command: Command::Shell("echo hi; exit 3".into()),
        created_at_ms: 1_795_000_000_000,
        due_at_ms: None,
        since_ms: Some(1_795_000_001_000),
        last_outcome: Some(Outcome::Exited(3)),
    }
}

#[test]
fn v1_handshake() {
    check(1, "hello", Hello::new("chimectl 0.1.0"));
    let ok: Handshake = Ok(Welcome {
        version: 1,
        daemon_version: "0.1.0".into(),
        uid: 1000,
    });
    check(1, "welcome", ok);
    let refused: Handshake = Err(ErrorReply::new(
        ErrorCode::VersionMismatch,
        "client speaks protocol 9",
    ));
    check(1, "handshake_refused", refused);
}

#[test]
fn v1_requests() {
    let frame = |id, request| RequestFrame { id, request };
    check(1, "req_add", frame(1, Request::Add(spec())));
    let mut now = spec();
    now.name = None;
    now.command = Command::Shell("date".into());
    now.schedule = Schedule::Now;
    check(1, "req_add_now", frame(2, Request::Add(now.clone())));
    now.schedule = Schedule::After(90_000);
    check(1, "req_add_after", frame(3, Request::Add(now)));
    check(
        1,
        "req_list",
        frame(
            4,
            Request::List(ListJobs {
                state: Some(JobState::Scheduled),
                after: Some(JobId(10)),
                limit: 100,
            }),
        ),
    );
    check(
        1,
        "req_show_id",
        frame(5, Request::Show(JobRef::Id(JobId(42)))),
    );
    check(
        1,
        "req_cancel_name",
        frame(6, Request::Cancel(JobRef::Name("backup".into()))),
    );
    check(1, "req_status", frame(7, Request::Status));
    check(
        1,
        "req_logs",
        frame(
            8,
            Request::Logs(LogsRequest {
                job: JobRef::Id(JobId(42)),
                run: Some(RunId(7)),
                max_bytes: 65536,
            }),
        ),
    );
}

#[test]
fn v1_replies() {
    let reply = |id, result| ServerMessage::Reply(ReplyFrame { id, result });
    check(
        1,
        "rep_added",
        reply(
            1,
            Ok(Response::Added(Added {
                id: JobId(42),
                due_at_ms: 1_795_000_000_000,
            })),
        ),
    );
    check(
        1,
        "rep_jobs",
        reply(
            4,
            Ok(Response::Jobs(JobPage {
                jobs: vec![summary()],
                next: Some(JobId(42)),
            })),
        ),
    );
    let detail = JobDetail {
        summary: summary(),
        cwd: "/".into(),
        env: vec![("A".into(), "b".into())],
        cancel_requested: false,
        runs: vec![
            RunInfo {
                run: RunId(7),
                attempt: 1,
                due_at_ms: 1_795_000_000_000,
                started_at_ms: 1_795_000_000_005,
                finished_at_ms: Some(1_795_000_001_000),
                pid: Some(4242),
                outcome: Some(Outcome::Exited(3)),
                output_bytes: 3,
            },
            RunInfo {
                run: RunId(8),
                attempt: 2,
                due_at_ms: 1,
                started_at_ms: 2,
                finished_at_ms: Some(3),
                pid: None,
                outcome: Some(Outcome::SpawnError("no such file".into())),
                output_bytes: 0,
            },
        ],
    };
    check(1, "rep_job", reply(5, Ok(Response::Job(Box::new(detail)))));
    check(
        1,
        "rep_cancelled",
        reply(
            6,
            Ok(Response::Cancelled(Cancelled {
                id: JobId(42),
                state: JobState::Cancelled,
            })),
        ),
    );
    let status = DaemonStatus {
        daemon_version: "0.1.0".into(),
        protocol_version: 1,
        pid: 99,
        started_at_ms: 1_795_000_000_000,
        uptime_ms: 5000,
        state_dir: "/var/lib/chime".into(),
        socket: "/run/chime/chimed.sock".into(),
        database_path: "/var/lib/chime/chime.redb".into(),
        database_bytes: 1 << 20,
        counts: JobState::ALL.iter().map(|s| (*s, 1)).collect(),
        next_due_at_ms: Some(1_795_000_000_000),
        commits: 10,
        changes: 20,
        last_commit_us: 300,
        connections: 1,
        max_running: 64,
    };
    check(
        1,
        "rep_status",
        reply(7, Ok(Response::Status(Box::new(status)))),
    );
    check(
        1,
        "rep_logs",
        reply(
            8,
            Ok(Response::Logs(LogChunk {
                job: JobId(42),
                run: RunId(7),
                data: b"hello\n".to_vec(),
                skipped: 0,
                running: false,
            })),
        ),
    );
    for (name, code) in [
        ("err_not_found", ErrorCode::NotFound),
        ("err_permission", ErrorCode::PermissionDenied),
        ("err_unsupported", ErrorCode::Unsupported),
    ] {
        check(
            1,
            name,
            reply(9, Err(ErrorReply::new(code, format!("{code}")))),
        );
    }
}

#[test]
fn v1_outcomes() {
    for (name, outcome) in [
        ("outcome_exited", Outcome::Exited(-1)),
        ("outcome_signaled", Outcome::Signaled(9)),
        ("outcome_spawn_error", Outcome::SpawnError("x".into())),
        ("outcome_lost", Outcome::Lost),
        ("outcome_interrupted", Outcome::Interrupted),
    ] {
        check(1, name, outcome);
    }
    for state in JobState::ALL {
        check(1, &format!("state_{state}"), state);
    }
}
