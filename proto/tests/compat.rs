//! Compatibility: frames encoded by released versions must still decode to the same values.
//!
//! Each file under `fixtures/v<N>/` holds the hex payload of one frame (or of one value of a wire
//! type) as protocol version N encoded it. The test decodes every file as the daemon or a client
//! of this build decodes it (request frames through [`codec::decode_request`] with version N, so
//! through `chime_proto::compat`), compares it with the value built here, and checks that
//! encoding the value gives the same bytes. A change to a wire type that would break an old
//! client or daemon therefore fails this test.
//!
//! Protocol 1 is not released yet: its fixtures follow its types until the first release, then
//! are frozen, and a protocol 2 adds `fixtures/v2/` beside them (see the crate docs, "Evolving
//! the protocol").
//!
//! Recording: a fixture that is missing fails the test unless `CHIME_BLESS=1` is set, which
//! writes missing files only. Existing files are never rewritten: they are what old peers send.

use chime_proto::codec::{self, FrameError, decode, encode};
use chime_proto::*;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;
use std::path::PathBuf;

/// Checks `value` against fixture `vVERSION/NAME.hex`, decoding the stored bytes with `decode`.
fn check_with<T>(
    version: u32,
    name: &str,
    value: T,
    decode: impl FnOnce(&[u8]) -> Result<T, FrameError>,
) where
    T: Serialize + PartialEq + Debug,
{
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("v{version}"));
    let path = dir.join(format!("{name}.hex"));
    let encoded = encode(&value).expect("fixture values encode");
    let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(_) if std::env::var_os("CHIME_BLESS").is_some() => {
            std::fs::create_dir_all(&dir).expect("create the fixture directory");
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
    let decoded = decode(&bytes)
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

/// A value of a wire type, decoded as itself.
fn check<T>(version: u32, name: &str, value: T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    check_with(version, name, value, decode::<T>);
}

/// A request frame, decoded as the daemon decodes it from a client of `version`.
fn check_request(version: u32, name: &str, id: u64, request: Request) {
    check_with(version, name, RequestFrame { id, request }, |bytes| {
        codec::decode_request(version, bytes)
    });
}

/// A reply frame, decoded as a client decodes it.
fn check_reply(version: u32, name: &str, id: u64, result: Result<Response, ErrorReply>) {
    check(
        version,
        name,
        ServerMessage::Reply(ReplyFrame { id, result }),
    );
}

fn job_spec() -> JobSpec {
    JobSpec {
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

fn exec_spec() -> ExecSpec {
    ExecSpec {
        retries: Some(3),
        backoff_base_ms: Some(30_000),
        backoff_max_ms: None,
        retry_on: Some(vec![RetryOn::Exit, RetryOn::TimedOut]),
        timeout_ms: Some(7_200_000),
        kill_grace_ms: None,
        max_output: Some(1 << 20),
        keep_runs: Some(5),
        retention_ms: None,
        limits: ResourceLimits {
            memory_max: Some(512 << 20),
            cpu_quota_pct: Some(50),
            tasks_max: None,
            io_weight: Some(200),
        },
        keep_children: Some(true),
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
        limits: ResourceLimits {
            memory_max: None,
            cpu_quota_pct: Some(200),
            tasks_max: Some(64),
            io_weight: None,
        },
        keep_children: false,
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

fn summary() -> JobSummary {
    JobSummary {
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
        schedule_spec: ScheduleSpec::Cron {
            expr: "30 2 * * *".into(),
            tz: Some("Europe/London".into()),
        },
        waiting_for: Some("the job is paused until 2026-11-18T10:10:00.000Z: maintenance".into()),
        pause: Some(pause_info()),
        runs_started: 4,
        owed: 1,
    }
}

fn detail() -> JobDetail {
    JobDetail {
        summary: summary(),
        cwd: "/".into(),
        env: vec![("A".into(), "b".into())],
        count: Some(3),
        until_ms: None,
        catch_up: CatchUpPolicy::Latest,
        deadline_ms: None,
        overlap: OverlapPolicy::Replace,
        cancelling: false,
        owed: vec![5],
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
                usage: Some(RunUsage {
                    cpu_user_us: 1_200_000,
                    cpu_system_us: 30_000,
                    memory_peak_bytes: Some(47_395_635),
                    io_read_bytes: None,
                    io_write_bytes: Some(0),
                }),
                ended_at_start: None,
            },
            RunInfo {
                run: RunId(8),
                attempt: 2,
                due_at_ms: 1,
                started_at_ms: 2,
                finished_at_ms: Some(3),
                pid: Some(4243),
                outcome: Some(Outcome::Lost),
                output_bytes: 0,
                usage: None,
                ended_at_start: Some(2),
            },
            RunInfo {
                run: RunId(9),
                attempt: 1,
                due_at_ms: 4,
                started_at_ms: 5,
                finished_at_ms: None,
                pid: None,
                outcome: None,
                output_bytes: 0,
                usage: None,
                ended_at_start: None,
            },
        ],
        missed_total: 2,
        missed: vec![MissedInfo {
            due_at_ms: 1,
            decided_at_ms: 2,
            reason: "overlap".into(),
        }],
        exec: exec_info(),
        next_retry_ms: Some(9),
        journal: true,
        source: Some("/etc/chime/jobs.d/nightly.toml".into()),
    }
}

fn status() -> DaemonStatus {
    DaemonStatus {
        daemon_version: "0.1.0".into(),
        protocol_version: 1,
        pid: 99,
        started_at_ms: 1_795_000_000_000,
        uptime_ms: 5000,
        state_dir: "/var/lib/chime".into(),
        socket: "/run/chime/chimed.sock".into(),
        database_path: "/var/lib/chime/chime.redb".into(),
        database_bytes: 1 << 20,
        database_disk_bytes: 1 << 19,
        counts: JobState::ALL.iter().map(|s| (*s, 1)).collect(),
        next_due_at_ms: Some(1_795_000_000_000),
        commits: 10,
        changes: 20,
        last_commit_us: 300,
        connections: 1,
        max_running: 64,
        paused_all: None,
        paused_queues: vec![("backups".into(), pause_info())],
        zone: "Europe/London".into(),
        running: 2,
        events_oldest: 1,
        events_head: 90,
        watchers: 1,
        config: "/etc/chime/chimed.toml".into(),
        jobs_dir: "/etc/chime/jobs.d".into(),
        declared_jobs: 4,
        last_reload_ms: Some(1_795_000_000_500),
        reload_errors: 0,
        last_batch: 3,
        socket_activated: true,
        account_check: "account, expiry and PAM".into(),
        containment: ContainmentInfo {
            mode: "own".into(),
            cgroup: Some("/sys/fs/cgroup/chime/i0123456789abcdef".into()),
            controllers: vec!["cpu".into(), "pids".into()],
            description: "a cgroup per run".into(),
        },
        engine_priority: "realtime (SCHED_RR, priority 1; the engine thread only)".into(),
        limits: vec![LimitInfo {
            setting: "jobs_per_user".into(),
            value: "10000".into(),
            source: "default".into(),
        }],
        open_files: 65536,
        max_connections: 1000,
        storage_fault: None,
        disk_free_bytes: 1 << 30,
        damaged_records: 0,
        scrubbed: true,
        fleet: Some(FleetStatus {
            this_host: "web-1".into(),
            hosts: vec![FleetHost {
                host: "web-1".into(),
                epoch: 3,
                lease_left_ms: 12_000,
                running: 2,
            }],
        }),
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
    let refused: Handshake =
        Err(ErrorReply::new(ErrorCode::VersionMismatch, "client speaks protocol 9").into());
    check(1, "handshake_refused", refused);
}

#[test]
fn v1_requests() {
    let job = || JobRef::Name("nightly".into());
    let submit = |job, exec, journal| Request::Submit(Box::new(SubmitJob { job, exec, journal }));
    check_request(1, "req_submit", 1, submit(job_spec(), exec_spec(), false));
    let mut timer = job_spec();
    timer.command = Command::Timer;
    timer.schedule = ScheduleSpec::Every {
        interval_ms: 300_000,
        from_ms: None,
    };
    timer.catch_up = None;
    timer.overlap = None;
    timer.queue = None;
    timer.replace = false;
    check_request(
        1,
        "req_submit_timer",
        2,
        submit(timer, ExecSpec::default(), true),
    );
    let mut once = job_spec();
    once.name = None;
    once.command = Command::Argv(vec!["/usr/bin/rsync".into(), "-a".into(), "/src".into()]);
    for (name, schedule) in [
        ("req_submit_now", ScheduleSpec::Now),
        ("req_submit_at", ScheduleSpec::At(1_795_000_000_000)),
        ("req_submit_after", ScheduleSpec::After(90_000)),
    ] {
        once.schedule = schedule;
        check_request(1, name, 3, submit(once.clone(), ExecSpec::default(), false));
    }
    check_request(
        1,
        "req_list",
        4,
        Request::List(ListQuery {
            state: Some(JobState::Queued),
            queue: Some("q".into()),
            name_prefix: Some("back".into()),
            after: Some(JobId(10)),
            limit: 100,
        }),
    );
    check_request(1, "req_show", 5, Request::Show(JobRef::Id(JobId(42))));
    check_request(1, "req_cancel", 6, Request::Cancel(job()));
    check_request(1, "req_status", 7, Request::Status);
    check_request(
        1,
        "req_logs",
        8,
        Request::Logs(LogsQuery {
            job: job(),
            run: Some(RunId(4)),
            from: Some(100),
            max_bytes: 65536,
        }),
    );
    check_request(
        1,
        "req_next_cron",
        9,
        Request::Next(NextQuery {
            source: NextSource::Cron {
                expr: "0 * * * *".into(),
                tz: None,
            },
            count: 5,
            from_ms: Some(1),
        }),
    );
    check_request(
        1,
        "req_next_job",
        10,
        Request::Next(NextQuery {
            source: NextSource::Job(JobRef::Id(JobId(3))),
            count: 1,
            from_ms: None,
        }),
    );
    check_request(
        1,
        "req_next_every",
        11,
        Request::Next(NextQuery {
            source: NextSource::Every {
                interval_ms: 60_000,
                from_ms: Some(5),
            },
            count: 3,
            from_ms: None,
        }),
    );
    check_request(
        1,
        "req_pause",
        12,
        Request::Pause(PauseRequest {
            target: PauseTarget::Queue("backups".into()),
            until_ms: None,
            for_ms: Some(3_600_000),
            reason: Some("disk swap".into()),
        }),
    );
    check_request(1, "req_resume", 13, Request::Resume(PauseTarget::All));
    check_request(
        1,
        "req_resume_job",
        14,
        Request::Resume(PauseTarget::Job(job())),
    );
    check_request(1, "req_skip", 15, Request::Skip(JobRef::Id(JobId(3))));
    check_request(1, "req_trigger", 16, Request::Trigger(job()));
    check_request(
        1,
        "req_set_queue",
        17,
        Request::SetQueue(QueueSettings {
            name: "backups".into(),
            parallel: Some(Some(3)),
            clear_limits: true,
            limits: ResourceLimits {
                tasks_max: Some(512),
                ..ResourceLimits::default()
            },
        }),
    );
    check_request(1, "req_queues", 18, Request::Queues);
    check_request(
        1,
        "req_wait",
        19,
        Request::Wait(WaitQuery {
            job: job(),
            since_ms: Some(5),
        }),
    );
    check_request(
        1,
        "req_kill",
        20,
        Request::Kill(KillRequest {
            job: job(),
            signal: 9,
        }),
    );
    check_request(1, "req_retry", 21, Request::Retry(job()));
    check_request(1, "req_remove", 22, Request::Remove(job()));
    check_request(
        1,
        "req_watch",
        23,
        Request::Watch(WatchQuery {
            since: Some(41),
            job: Some(job()),
        }),
    );
    check_request(1, "req_reload", 24, Request::Reload);
    check_request(1, "req_metrics", 25, Request::Metrics);
    check_request(1, "req_job_file", 26, Request::JobFile(job()));
    check_request(
        1,
        "req_edit",
        27,
        Request::Edit(EditJob {
            id: JobId(42),
            revision: 0x0123_4567_89ab_cdef,
            text: "timer = true\nevery = \"1h\"\n".into(),
        }),
    );
}

#[test]
fn v1_replies() {
    check_reply(
        1,
        "rep_added",
        1,
        Ok(Response::Added(Added {
            id: JobId(42),
            due_at_ms: 1_795_000_000_000,
        })),
    );
    check_reply(
        1,
        "rep_jobs",
        2,
        Ok(Response::Jobs(JobPage {
            jobs: vec![summary()],
            next: Some(JobId(3)),
        })),
    );
    check_reply(1, "rep_job", 3, Ok(Response::Job(Box::new(detail()))));
    check_reply(
        1,
        "rep_cancelled",
        4,
        Ok(Response::Cancelled(Cancelled {
            id: JobId(42),
            state: JobState::Cancelled,
        })),
    );
    check_reply(1, "rep_status", 5, Ok(Response::Status(Box::new(status()))));
    check_reply(
        1,
        "rep_logs",
        6,
        Ok(Response::Logs(LogChunk {
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
    );
    check_reply(
        1,
        "rep_preview",
        7,
        Ok(Response::Preview(Preview {
            schedule: "every 5m".into(),
            zone: "UTC".into(),
            dst_rule: Some("wall clock".into()),
            times: vec![FireTime {
                at_ms: 1,
                offset_s: -18000,
            }],
            notes: vec!["--count 3: 1 started, 2 left".into()],
        })),
    );
    check_reply(
        1,
        "rep_paused",
        8,
        Ok(Response::Paused(Paused {
            target: PauseTarget::All,
            pause: pause_info(),
        })),
    );
    check_reply(
        1,
        "rep_resumed",
        9,
        Ok(Response::Resumed(Resumed {
            target: PauseTarget::Job(JobRef::Id(JobId(1))),
            released: 7,
        })),
    );
    check_reply(
        1,
        "rep_skipped",
        10,
        Ok(Response::Skipped(Skipped {
            id: JobId(1),
            skipped_due_ms: 5,
            next_due_ms: Some(6),
        })),
    );
    check_reply(
        1,
        "rep_triggered",
        11,
        Ok(Response::Triggered(Triggered {
            id: JobId(1),
            state: JobState::Queued,
        })),
    );
    check_reply(
        1,
        "rep_queues",
        12,
        Ok(Response::Queues(vec![QueueInfo {
            name: "default".into(),
            parallel: None,
            running: 2,
            waiting: 0,
            pause: Some(pause_info()),
            limits: ResourceLimits {
                memory_max: Some(1 << 30),
                ..ResourceLimits::default()
            },
        }])),
    );
    check_reply(
        1,
        "rep_waited",
        13,
        Ok(Response::Waited(Waited {
            id: JobId(9),
            state: JobState::Failed,
            run: detail().runs.first().cloned(),
        })),
    );
    check_reply(
        1,
        "rep_killed",
        14,
        Ok(Response::Killed(Killed {
            id: JobId(9),
            signalled: 1,
        })),
    );
    check_reply(
        1,
        "rep_removed",
        15,
        Ok(Response::Removed(Removed {
            id: JobId(9),
            runs: 2,
        })),
    );
    for (name, code) in [
        ("err_bad_request", ErrorCode::BadRequest),
        ("err_not_found", ErrorCode::NotFound),
        ("err_permission", ErrorCode::PermissionDenied),
        ("err_unsupported", ErrorCode::Unsupported),
        ("err_damaged", ErrorCode::Damaged),
        ("err_unknown_code", ErrorCode::Other(999)),
    ] {
        check_reply(1, name, 16, Err(ErrorReply::new(code, format!("{code}"))));
    }
    // A refused spec names its field as a type: the last field kind, so that appending one
    // later shows here.
    check_reply(
        1,
        "err_spec_field",
        17,
        Err(ErrorReply::about(
            chime_proto::SpecField::Retention,
            "may be at most 7d",
        )),
    );
}

#[test]
fn v1_watch_and_reload() {
    let reply = |id, result| ServerMessage::Reply(ReplyFrame { id, result });
    check(
        1,
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
        1,
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
                        usage: Some(RunUsage {
                            cpu_user_us: 7,
                            cpu_system_us: 8,
                            memory_peak_bytes: None,
                            io_read_bytes: Some(4096),
                            io_write_bytes: None,
                        }),
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
                        limits: ResourceLimits {
                            io_weight: Some(50),
                            ..ResourceLimits::default()
                        },
                    },
                ),
            ]),
        }),
    );
    check(
        1,
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
        1,
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
                warnings: vec!["/etc/chime/jobs.d/e.toml:4: until: is in the past".into()],
            })),
        ),
    );
    check(
        1,
        "rep_metrics",
        reply(3, Ok(Response::Metrics("# EOF\n".into()))),
    );
    check(
        1,
        "rep_job_file",
        reply(
            4,
            Ok(Response::JobFile(JobFile {
                id: JobId(42),
                name: Some("backup".into()),
                file_name: "backup.toml".into(),
                revision: 0x0123_4567_89ab_cdef,
                text: "# job 42\ntimer = true\nevery = \"1h\"\n".into(),
            })),
        ),
    );
}

#[test]
fn v1_values() {
    for (name, outcome) in [
        ("outcome_exited", Outcome::Exited(-1)),
        ("outcome_signaled", Outcome::Signaled(9)),
        ("outcome_spawn_error", Outcome::SpawnError("x".into())),
        ("outcome_lost", Outcome::Lost),
        ("outcome_interrupted", Outcome::Interrupted),
        ("outcome_timed_out", Outcome::TimedOut),
        ("outcome_fired", Outcome::Fired),
        ("outcome_oom_killed", Outcome::OomKilled),
    ] {
        check(1, name, outcome);
    }
    for state in JobState::ALL {
        check(1, &format!("state_{state}"), state);
    }
    for kind in RetryOn::ALL {
        check(1, &format!("retry_on_{}", kind.as_str()), kind);
    }
    check(1, "command_timer", Command::Timer);
}
