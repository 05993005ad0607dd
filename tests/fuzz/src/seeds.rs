//! Seed inputs: valid conversations that reach every request, written to the corpus by
//! `cargo run --example seeds` (see README.md, "Fuzzing").
//!
//! Each seed is an input as [`crate::Harness::run`] reads it: who asks, a hello, then request
//! frames. Requests that name a job follow the submission of a job of that name, so that they
//! reach the engine's checks on a real job, not only "not found".

use chime_proto::codec;
use chime_proto::event::WatchQuery;
use chime_proto::{
    CatchUpPolicy, Command, ExecSpec, Hello, JobId, JobRef, JobSpec, JobState, KillRequest,
    ListQuery, LogsQuery, NextQuery, NextSource, OverlapPolicy, PauseRequest, PauseTarget,
    QueueSettings, Request, RequestFrame, ResourceLimits, RetryOn, ScheduleSpec, SubmitJob,
    WaitQuery,
};

/// The first byte of an input: who asks.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// chimed's own user (an administrator).
    Admin = 0,
    /// `nobody`, held to the per-user limits.
    User = 1,
}

/// A frame as a client writes it: the 4-byte big-endian length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// An input: `who` says hello at protocol `version`, then sends `requests` with ids 1, 2, ...
pub fn conversation(who: Who, version: u32, requests: &[Request]) -> Vec<u8> {
    let mut hello = Hello::new("chime-fuzz seeds");
    hello.version = version;
    let mut out = vec![who as u8];
    out.extend(frame(&codec::encode(&hello).expect("a hello encodes")));
    for (id, request) in (1..).zip(requests) {
        out.extend(request_frame(id, request.clone()));
    }
    out
}

/// A request frame as a client writes it.
fn request_frame(id: u64, request: Request) -> Vec<u8> {
    frame(&codec::encode(&RequestFrame { id, request }).expect("a request encodes"))
}

const NAME: &str = "seed";

fn named() -> JobRef {
    JobRef::Name(NAME.into())
}

/// A job named [`NAME`] every hour (cron), with most options set.
fn job_spec() -> JobSpec {
    JobSpec {
        name: Some(NAME.into()),
        env: vec![("SEED".into(), "1".into())],
        count: Some(3),
        until_ms: Some(4_102_444_800_000),
        catch_up: Some(CatchUpPolicy::All { limit: 2 }),
        deadline_ms: Some(60_000),
        overlap: Some(OverlapPolicy::Queue),
        queue: Some("seedq".into()),
        ..JobSpec::new(
            Command::Argv(vec!["true".into(), "--seed".into()]),
            "/",
            ScheduleSpec::Cron {
                expr: "0 * * * *".into(),
                tz: Some("Europe/Paris".into()),
            },
        )
    }
}

fn exec_spec() -> ExecSpec {
    ExecSpec {
        retries: Some(2),
        backoff_base_ms: Some(1_000),
        backoff_max_ms: Some(60_000),
        retry_on: Some(vec![RetryOn::Exit, RetryOn::SpawnError]),
        timeout_ms: Some(30_000),
        kill_grace_ms: Some(1_000),
        max_output: Some(64 * 1024),
        keep_runs: Some(5),
        retention_ms: Some(3_600_000),
        // No resource limit: the in-process daemon has no cgroup controllers, and would refuse
        // one (a limit's refusal is a seed of its own).
        limits: ResourceLimits::default(),
        keep_children: Some(true),
    }
}

/// The submission every job request follows: a timer every minute.
fn submit_timer() -> Request {
    Request::Submit(Box::new(SubmitJob {
        job: JobSpec {
            name: Some(NAME.into()),
            ..JobSpec::new(
                Command::Timer,
                "/",
                ScheduleSpec::Every {
                    interval_ms: 60_000,
                    from_ms: None,
                },
            )
        },
        exec: ExecSpec {
            retries: Some(1),
            ..ExecSpec::default()
        },
        journal: false,
    }))
}

/// One request of each of the 20 kinds, by name.
fn each_request() -> Vec<(&'static str, Request)> {
    vec![
        (
            "submit",
            Request::Submit(Box::new(SubmitJob {
                job: job_spec(),
                exec: exec_spec(),
                journal: true,
            })),
        ),
        (
            "list",
            Request::List(ListQuery {
                state: Some(JobState::Scheduled),
                queue: Some("seedq".into()),
                name_prefix: Some("se".into()),
                after: Some(JobId(0)),
                limit: 100,
            }),
        ),
        ("show", Request::Show(named())),
        ("cancel", Request::Cancel(named())),
        ("status", Request::Status),
        (
            "logs",
            Request::Logs(LogsQuery {
                job: named(),
                run: None,
                from: Some(0),
                max_bytes: 4096,
            }),
        ),
        (
            "next",
            Request::Next(NextQuery {
                source: NextSource::Cron {
                    expr: "*/15 9-17 * * MON-FRI".into(),
                    tz: Some("America/New_York".into()),
                },
                count: 5,
                from_ms: Some(1_700_000_000_000),
            }),
        ),
        (
            "pause",
            Request::Pause(PauseRequest {
                target: PauseTarget::Job(named()),
                until_ms: None,
                for_ms: Some(60_000),
                reason: Some("seed".into()),
            }),
        ),
        ("resume", Request::Resume(PauseTarget::Job(named()))),
        ("skip", Request::Skip(named())),
        ("trigger", Request::Trigger(named())),
        (
            "set-queue",
            Request::SetQueue(QueueSettings {
                name: "seedq".into(),
                parallel: Some(Some(2)),
                clear_limits: false,
                limits: ResourceLimits::default(),
            }),
        ),
        ("queues", Request::Queues),
        (
            "wait",
            Request::Wait(WaitQuery {
                job: named(),
                since_ms: None,
            }),
        ),
        (
            "kill",
            Request::Kill(KillRequest {
                job: named(),
                signal: 15,
            }),
        ),
        ("retry", Request::Retry(named())),
        ("remove", Request::Remove(named())),
        (
            "watch",
            Request::Watch(WatchQuery {
                since: Some(0),
                job: Some(named()),
            }),
        ),
        ("reload", Request::Reload),
        ("metrics", Request::Metrics),
        ("job-file", Request::JobFile(named())),
        (
            "edit",
            Request::Edit(chime_proto::EditJob {
                id: JobId(1),
                revision: 0,
                text: "timer = true\nevery = \"1h\"\n".into(),
            }),
        ),
    ]
}

/// Every seed, by file name.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use chime_proto::PROTOCOL_VERSION as V;
    let mut seeds = Vec::new();
    let requests = each_request();
    assert_eq!(
        requests.len() as u32,
        chime_proto::codec::REQUEST_VARIANTS,
        "a seed for every kind of request"
    );
    for (name, request) in requests {
        // Each request alone, then after the submission of the job it names, by each user.
        seeds.push((
            format!("seed-{name}"),
            conversation(Who::Admin, V, std::slice::from_ref(&request)),
        ));
        let after_submit = [submit_timer(), request];
        seeds.push((
            format!("seed-{name}-job"),
            conversation(Who::Admin, V, &after_submit),
        ));
        seeds.push((
            format!("seed-{name}-user"),
            conversation(Who::User, V, &after_submit),
        ));
    }
    // Everything a job goes through, in order.
    let life = [
        Request::Submit(Box::new(SubmitJob {
            job: JobSpec {
                name: Some(NAME.into()),
                ..JobSpec::new(
                    Command::Argv(vec!["/bin/true".into()]),
                    "/",
                    ScheduleSpec::Now,
                )
            },
            exec: exec_spec(),
            journal: false,
        })),
        Request::Show(named()),
        Request::List(ListQuery {
            state: None,
            queue: None,
            name_prefix: None,
            after: None,
            limit: 5,
        }),
        Request::Trigger(named()),
        Request::Logs(LogsQuery {
            job: named(),
            run: None,
            from: None,
            max_bytes: 100,
        }),
        Request::Cancel(named()),
        Request::Retry(named()),
        Request::Show(named()),
        Request::Remove(named()),
    ];
    seeds.push(("seed-life".into(), conversation(Who::Admin, V, &life)));
    let pauses = [
        Request::Pause(PauseRequest {
            target: PauseTarget::All,
            until_ms: Some(4_102_444_800_000),
            for_ms: None,
            reason: None,
        }),
        Request::Pause(PauseRequest {
            target: PauseTarget::Queue("seedq".into()),
            until_ms: None,
            for_ms: Some(1),
            reason: Some("maintenance".into()),
        }),
        submit_timer(),
        Request::Queues,
        Request::Status,
        Request::Resume(PauseTarget::Queue("seedq".into())),
        Request::Resume(PauseTarget::All),
    ];
    seeds.push(("seed-pauses".into(), conversation(Who::Admin, V, &pauses)));
    let next = [
        Request::Next(NextQuery {
            source: NextSource::Every {
                interval_ms: 90_000,
                from_ms: Some(0),
            },
            count: 3,
            from_ms: None,
        }),
        submit_timer(),
        Request::Next(NextQuery {
            source: NextSource::Job(named()),
            count: 1000,
            from_ms: None,
        }),
    ];
    seeds.push((
        "seed-next-sources".into(),
        conversation(Who::Admin, V, &next),
    ));

    // What chimed refuses: no hello, an old client, a request it does not know, an oversized
    // length prefix, bytes after a message.
    let mut not_hello = vec![Who::Admin as u8];
    not_hello.extend(frame(b"GET / HTTP/1.1\r\n"));
    seeds.push(("seed-not-hello".into(), not_hello));
    seeds.push((
        "seed-too-old".into(),
        conversation(Who::Admin, 0, &[Request::Status]),
    ));
    // A newer client: the handshake agrees on this build's version.
    seeds.push((
        "seed-newer-client".into(),
        conversation(Who::Admin, V + 1, &[Request::Status]),
    ));
    let mut unknown = conversation(Who::Admin, V, &[]);
    let mut payload = codec::encode(&7u64).expect("an id encodes");
    payload.extend(codec::encode(&(codec::REQUEST_VARIANTS + 5)).expect("a variant encodes"));
    unknown.extend(frame(&payload));
    unknown.extend(request_frame(8, Request::Status));
    seeds.push(("seed-unknown-request".into(), unknown));
    let mut oversized = conversation(Who::Admin, V, &[Request::Queues]);
    oversized.extend(u32::MAX.to_be_bytes());
    seeds.push(("seed-oversized".into(), oversized));
    let mut trailing = conversation(Who::Admin, V, &[]);
    let mut payload = codec::encode(&RequestFrame {
        id: 1,
        request: Request::Status,
    })
    .expect("a request encodes");
    payload.push(0);
    trailing.extend(frame(&payload));
    seeds.push(("seed-trailing".into(), trailing));
    seeds
}
