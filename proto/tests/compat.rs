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
    // What a protocol-1 client sends (Hello::new says the current version).
    let v1_hello = Hello {
        magic: MAGIC,
        version: 1,
        client: "chimectl 0.1.0".into(),
    };
    check(1, "hello", v1_hello);
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
        counts: JobState::V1.iter().map(|s| (*s, 1)).collect(),
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
    for state in JobState::V1 {
        check(1, &format!("state_{state}"), state);
    }
}

// ---- protocol 2: new messages; every v1 fixture above must still decode ----

fn submit() -> SubmitJob {
    SubmitJob {
        name: Some("nightly".into()),
        command: Command::Shell("backup --all".into()),
        cwd: "/srv".into(),
        env: vec![("K".into(), "v".into())],
        schedule: ScheduleSpec::Cron {
            expr: "30 2 * * *".into(),
            tz: Some("Europe/London".into()),
        },
        count: Some(10),
        until_ms: Some(1_900_000_000_000),
        catch_up: Some(CatchUpPolicy::All { limit: 5 }),
        deadline_ms: Some(600_000),
        overlap: Some(OverlapPolicy::Queue),
        queue: Some("backups".into()),
        replace: true,
    }
}

fn pause_info() -> PauseInfo {
    PauseInfo {
        since_ms: 1_795_000_000_000,
        until_ms: Some(1_795_000_600_000),
        reason: Some("maintenance".into()),
        by_uid: 0,
    }
}

#[test]
fn v2_requests() {
    let frame = |id, request| RequestFrame { id, request };
    check(
        2,
        "hello",
        Hello {
            magic: MAGIC,
            version: 2,
            client: "chimectl 0.1.0".into(),
        },
    );
    check(
        2,
        "req_submit",
        frame(1, Request::Submit(Box::new(submit()))),
    );
    let mut every = submit();
    every.schedule = ScheduleSpec::Every {
        interval_ms: 300_000,
        from_ms: None,
    };
    every.catch_up = None;
    every.overlap = None;
    every.queue = None;
    every.replace = false;
    check(
        2,
        "req_submit_every",
        frame(2, Request::Submit(Box::new(every))),
    );
    check(
        2,
        "req_next_cron",
        frame(
            3,
            Request::Next(NextQuery {
                source: NextSource::Cron {
                    expr: "0 * * * *".into(),
                    tz: None,
                },
                count: 5,
                from_ms: Some(1),
            }),
        ),
    );
    check(
        2,
        "req_next_job",
        frame(
            4,
            Request::Next(NextQuery {
                source: NextSource::Job(JobRef::Id(JobId(3))),
                count: 1,
                from_ms: None,
            }),
        ),
    );
    check(
        2,
        "req_list2",
        frame(
            5,
            Request::List2(ListQuery {
                state: Some(JobState::Queued),
                queue: Some("q".into()),
                name_prefix: Some("back".into()),
                after: None,
                limit: 100,
            }),
        ),
    );
    check(
        2,
        "req_show2",
        frame(6, Request::Show2(JobRef::Name("nightly".into()))),
    );
    check(
        2,
        "req_pause",
        frame(
            7,
            Request::Pause(PauseRequest {
                target: PauseTarget::Queue("backups".into()),
                until_ms: None,
                for_ms: Some(3_600_000),
                reason: Some("disk swap".into()),
            }),
        ),
    );
    check(2, "req_resume", frame(8, Request::Resume(PauseTarget::All)));
    check(2, "req_skip", frame(9, Request::Skip(JobRef::Id(JobId(3)))));
    check(
        2,
        "req_trigger",
        frame(10, Request::Trigger(JobRef::Id(JobId(3)))),
    );
    check(
        2,
        "req_set_queue",
        frame(
            11,
            Request::SetQueue(QueueSettings {
                name: "backups".into(),
                parallel: Some(3),
            }),
        ),
    );
    check(2, "req_queues", frame(12, Request::Queues));
    check(2, "req_status2", frame(13, Request::Status2));
}

#[test]
fn v2_replies() {
    let reply = |id, result| ServerMessage::Reply(ReplyFrame { id, result });
    let summary2 = JobSummary2 {
        id: JobId(3),
        name: Some("nightly".into()),
        owner_uid: 1000,
        state: JobState::Paused,
        command: Command::Argv(vec!["/bin/true".into()]),
        created_at_ms: 1,
        next_due_ms: Some(2),
        since_ms: None,
        last_outcome: Some(Outcome::Signaled(15)),
        queue: "backups".into(),
        schedule: "cron \"30 2 * * *\" Europe/London".into(),
        pause: Some(pause_info()),
        runs_started: 4,
        owed: 1,
    };
    check(
        2,
        "rep_jobs2",
        reply(
            1,
            Ok(Response::Jobs2(JobPage2 {
                jobs: vec![summary2.clone()],
                next: None,
            })),
        ),
    );
    let detail = JobDetail2 {
        summary: summary2,
        cwd: "/".into(),
        env: vec![],
        count: Some(3),
        until_ms: None,
        catch_up: CatchUpPolicy::Latest,
        deadline_ms: None,
        overlap: OverlapPolicy::Replace,
        cancelling: false,
        owed: vec![5],
        runs: vec![],
        missed_total: 2,
        missed: vec![MissedInfo {
            due_at_ms: 1,
            decided_at_ms: 2,
            reason: "overlap".into(),
        }],
    };
    check(
        2,
        "rep_job2",
        reply(2, Ok(Response::Job2(Box::new(detail)))),
    );
    check(
        2,
        "rep_preview",
        reply(
            3,
            Ok(Response::Preview(Preview {
                schedule: "every 5m".into(),
                zone: "UTC".into(),
                dst_rule: Some("wall clock".into()),
                times: vec![FireTime {
                    at_ms: 1,
                    offset_s: -18000,
                }],
            })),
        ),
    );
    check(
        2,
        "rep_paused",
        reply(
            4,
            Ok(Response::Paused(Paused {
                target: PauseTarget::All,
                pause: pause_info(),
            })),
        ),
    );
    check(
        2,
        "rep_resumed",
        reply(
            5,
            Ok(Response::Resumed(Resumed {
                target: PauseTarget::Job(JobRef::Id(JobId(1))),
                released: 7,
            })),
        ),
    );
    check(
        2,
        "rep_skipped",
        reply(
            6,
            Ok(Response::Skipped(Skipped {
                id: JobId(1),
                skipped_due_ms: 5,
                next_due_ms: Some(6),
            })),
        ),
    );
    check(
        2,
        "rep_triggered",
        reply(
            7,
            Ok(Response::Triggered(Triggered {
                id: JobId(1),
                state: JobState::Queued,
            })),
        ),
    );
    check(
        2,
        "rep_queues",
        reply(
            8,
            Ok(Response::Queues(vec![QueueInfo {
                name: "default".into(),
                parallel: None,
                running: 2,
                waiting: 0,
                pause: Some(pause_info()),
            }])),
        ),
    );
    for state in [JobState::Queued, JobState::Paused] {
        check(2, &format!("state_{state}"), state);
    }
}

fn exec_spec() -> ExecSpec {
    ExecSpec {
        retries: 3,
        backoff_base_ms: Some(30_000),
        backoff_max_ms: None,
        retry_on: Some(vec![RetryOn::Exit, RetryOn::TimedOut]),
        timeout_ms: Some(7_200_000),
        kill_grace_ms: None,
        max_output: Some(1 << 20),
        keep_runs: Some(5),
        retention_ms: None,
    }
}

fn exec_info() -> ExecInfo {
    ExecInfo {
        retries: 3,
        backoff_base_ms: 30_000,
        backoff_max_ms: 3_600_000,
        retry_on: vec![RetryOn::Exit, RetryOn::Lost],
        timeout_ms: None,
        kill_grace_ms: 10_000,
        max_output: 8 << 20,
        keep_runs: 100,
        retention_ms: 604_800_000,
    }
}

fn detail2() -> JobDetail2 {
    JobDetail2 {
        summary: JobSummary2 {
            id: JobId(9),
            name: None,
            owner_uid: 0,
            state: JobState::Failed,
            command: Command::Argv(vec!["/bin/sleep".into(), "10".into()]),
            created_at_ms: 1,
            next_due_ms: None,
            since_ms: Some(3),
            last_outcome: Some(Outcome::TimedOut),
            queue: "default".into(),
            schedule: "once".into(),
            pause: None,
            runs_started: 1,
            owed: 0,
        },
        cwd: "/".into(),
        env: vec![],
        count: None,
        until_ms: None,
        catch_up: CatchUpPolicy::Latest,
        deadline_ms: None,
        overlap: OverlapPolicy::Skip,
        cancelling: false,
        owed: vec![],
        runs: vec![RunInfo {
            run: RunId(4),
            attempt: 1,
            due_at_ms: 1,
            started_at_ms: 2,
            finished_at_ms: Some(3),
            pid: Some(77),
            outcome: Some(Outcome::TimedOut),
            output_bytes: 0,
        }],
        missed_total: 0,
        missed: vec![],
    }
}

#[test]
fn v3_requests() {
    let frame = |id, request| RequestFrame { id, request };
    let job = JobRef::Name("nightly".into());
    check(
        3,
        "req_submit3",
        frame(
            1,
            Request::Submit3(Box::new(SubmitJob3 {
                job: submit(),
                exec: exec_spec(),
            })),
        ),
    );
    check(3, "req_show3", frame(2, Request::Show3(job.clone())));
    check(
        3,
        "req_logs2",
        frame(
            3,
            Request::Logs2(LogsQuery {
                job: job.clone(),
                run: Some(RunId(4)),
                from: Some(100),
                max_bytes: 65536,
            }),
        ),
    );
    check(
        3,
        "req_wait",
        frame(
            4,
            Request::Wait(WaitQuery {
                job: job.clone(),
                since_ms: Some(5),
            }),
        ),
    );
    check(
        3,
        "req_kill",
        frame(
            5,
            Request::Kill(KillRequest {
                job: job.clone(),
                signal: 9,
            }),
        ),
    );
    check(3, "req_retry", frame(6, Request::Retry(job.clone())));
    check(3, "req_remove", frame(7, Request::Remove(job)));
}

#[test]
fn v3_replies() {
    let reply = |id, result| ServerMessage::Reply(ReplyFrame { id, result });
    check(
        3,
        "rep_job3",
        reply(
            1,
            Ok(Response::Job3(Box::new(JobDetail3 {
                detail: detail2(),
                exec: exec_info(),
                next_retry_ms: Some(9),
            }))),
        ),
    );
    check(
        3,
        "rep_logs2",
        reply(
            2,
            Ok(Response::Logs2(LogChunk2 {
                job: JobId(9),
                run: RunId(4),
                segments: vec![
                    LogSegment {
                        stream: Stream::Stdout,
                        data: b"out\n".to_vec(),
                    },
                    LogSegment {
                        stream: Stream::Stderr,
                        data: b"err\n".to_vec(),
                    },
                ],
                from: 0,
                next: 8,
                dropped: 0,
                running: false,
            })),
        ),
    );
    check(
        3,
        "rep_waited",
        reply(
            3,
            Ok(Response::Waited(Waited {
                id: JobId(9),
                state: JobState::Failed,
                run: None,
            })),
        ),
    );
    check(
        3,
        "rep_killed",
        reply(
            4,
            Ok(Response::Killed(Killed {
                id: JobId(9),
                signalled: 1,
            })),
        ),
    );
    check(
        3,
        "rep_removed",
        reply(
            5,
            Ok(Response::Removed(Removed {
                id: JobId(9),
                runs: 2,
            })),
        ),
    );
    check(3, "outcome_timed_out", Outcome::TimedOut);
}

#[test]
fn v4_requests() {
    let frame = |id, request| RequestFrame { id, request };
    check(
        4,
        "req_watch",
        frame(
            1,
            Request::Watch(WatchQuery {
                since: Some(41),
                job: Some(JobRef::Name("nightly".into())),
            }),
        ),
    );
    check(4, "req_reload", frame(2, Request::Reload));
    check(4, "req_metrics", frame(3, Request::Metrics));
    check(4, "req_status3", frame(4, Request::Status3));
    let mut timer = submit();
    timer.command = Command::Timer;
    check(
        4,
        "req_submit4",
        frame(
            5,
            Request::Submit4(Box::new(SubmitJob4 {
                job: timer,
                exec: ExecSpec::default(),
                journal: true,
                retries: Some(2),
            })),
        ),
    );
    check(
        4,
        "req_show4",
        frame(6, Request::Show4(JobRef::Id(JobId(9)))),
    );
}

#[test]
fn v4_replies() {
    let reply = |id, result| ServerMessage::Reply(ReplyFrame { id, result });
    check(
        4,
        "rep_watching",
        reply(
            1,
            Ok(Response::Watching(WatchStart {
                oldest: 3,
                head: 90,
                from: 3,
                pruned: true,
                job: Some(JobId(9)),
            })),
        ),
    );
    let event = |seq, kind| EventRecord {
        seq,
        at_ms: 1_795_000_000_000,
        job: Some(JobId(9)),
        name: Some("nightly".into()),
        owner: Some(1000),
        kind,
        actor: Some(1000),
    };
    check(
        4,
        "watch_events",
        ServerMessage::Watch(WatchFrame {
            id: 1,
            item: WatchItem::Events(vec![
                event(
                    3,
                    EventKind::Added {
                        queue: "default".into(),
                        next_due_ms: Some(5),
                        timer: false,
                        source: "chimectl".into(),
                    },
                ),
                event(4, EventKind::Updated { next_due_ms: None }),
                event(
                    5,
                    EventKind::State {
                        from: JobState::Scheduled,
                        to: JobState::Running,
                    },
                ),
                event(
                    6,
                    EventKind::Started {
                        run: RunId(2),
                        attempt: 1,
                        due_ms: 5,
                        queue: "default".into(),
                    },
                ),
                event(
                    7,
                    EventKind::Ended {
                        run: RunId(2),
                        attempt: 1,
                        outcome: Outcome::Exited(0),
                        duration_ms: 12,
                    },
                ),
                event(
                    8,
                    EventKind::Fired {
                        run: RunId(3),
                        due_ms: 6,
                        manual: false,
                    },
                ),
                event(
                    9,
                    EventKind::Missed {
                        due_ms: 7,
                        reason: "overlap".into(),
                    },
                ),
                event(
                    10,
                    EventKind::Paused {
                        target: PauseTarget::Queue("io".into()),
                        until_ms: None,
                        reason: Some("disk swap".into()),
                    },
                ),
                event(
                    11,
                    EventKind::Resumed {
                        target: PauseTarget::All,
                    },
                ),
                event(
                    12,
                    EventKind::Removed {
                        reason: "expired".into(),
                    },
                ),
                event(
                    13,
                    EventKind::QueueLimit {
                        queue: "io".into(),
                        parallel: Some(2),
                    },
                ),
            ]),
        }),
    );
    check(
        4,
        "watch_lagged",
        ServerMessage::Watch(WatchFrame {
            id: 1,
            item: WatchItem::Lagged {
                resume_from: 14,
                lost: 0,
            },
        }),
    );
    check(
        4,
        "rep_reloaded",
        reply(
            2,
            Ok(Response::Reloaded(ReloadReport {
                config: "/etc/chime/chimed.toml".into(),
                jobs_dir: "/etc/chime/jobs.d".into(),
                added: vec!["a".into()],
                updated: vec!["b".into()],
                removed: vec!["c".into()],
                unchanged: 4,
                errors: vec!["/etc/chime/jobs.d/d.toml:3: schedule: bad".into()],
                restart_needed: vec!["socket".into()],
            })),
        ),
    );
    check(
        4,
        "rep_metrics",
        reply(3, Ok(Response::Metrics("# EOF\n".into()))),
    );
    let mut detail = detail2();
    detail.summary.command = Command::Timer;
    detail.runs[0].outcome = Some(Outcome::Fired);
    check(
        4,
        "rep_job4",
        reply(
            4,
            Ok(Response::Job4(Box::new(JobDetail4 {
                detail: JobDetail3 {
                    detail,
                    exec: exec_info(),
                    next_retry_ms: None,
                },
                journal: true,
                source: Some("/etc/chime/jobs.d/nightly.toml".into()),
            }))),
        ),
    );
    check(4, "outcome_fired", Outcome::Fired);
    check(4, "command_timer", Command::Timer);
}
