//! Compatibility at the edge: the one place where protocol versions other than the current one
//! exist.
//!
//! The daemon decodes every request frame through [`decode_request`] and encodes every message it
//! sends through [`encode_server_message`], each given the version agreed in the handshake. An
//! older client's request is decoded with that version's frozen types and upgraded to the current
//! ones here, once; a message to an older client is downgraded here to that version's types. So
//! the daemon's handlers and engine only ever see the current [`Request`](crate::Request) and
//! build the current [`Response`](crate::Response), whichever client is asking.
//!
//! Today protocol 1 is the only version, so both entry points are the identity on the current
//! types. What a later version adds is written down in the crate docs ("Evolving the protocol"),
//! and the test `example` below carries it out for a hypothetical protocol 2.

use crate::codec::{self, FrameError};
use crate::{PROTOCOL_VERSION, RequestFrame, ServerMessage};

/// Decodes the payload of a request frame from a client that speaks protocol `version`, and
/// upgrades it to the current types.
///
/// Errors: the payload does not decode as a request of that version ([`FrameError::Decode`],
/// [`FrameError::Trailing`]), or `version` is not one this build speaks ([`FrameError::Version`];
/// the handshake never agrees on such a version).
pub fn decode_request(version: u32, payload: &[u8]) -> Result<RequestFrame, FrameError> {
    match version {
        PROTOCOL_VERSION => codec::decode(payload),
        // A released older version N goes here:
        // `N => codec::decode::<vN::RequestFrame>(payload).map(vN::upgrade)`.
        other => Err(FrameError::Version(other)),
    }
}

/// Encodes `message` for a client that speaks protocol `version`, downgraded to that version's
/// types.
///
/// Errors: `version` is not one this build speaks ([`FrameError::Version`]), or the message does
/// not encode.
pub fn encode_server_message(version: u32, message: &ServerMessage) -> Result<Vec<u8>, FrameError> {
    match version {
        PROTOCOL_VERSION => codec::encode(message),
        // A released older version N goes here: `N => codec::encode(&vN::downgrade(message))`.
        other => Err(FrameError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, ErrorReply, ReplyFrame, Request};

    #[test]
    fn the_current_version_is_decoded_and_encoded_as_it_is() {
        let frame = RequestFrame {
            id: 7,
            request: Request::Status,
        };
        let payload = codec::encode(&frame).unwrap();
        assert_eq!(decode_request(PROTOCOL_VERSION, &payload).unwrap(), frame);

        let message = ServerMessage::Reply(ReplyFrame {
            id: 7,
            result: Err(ErrorReply::new(ErrorCode::Busy, "busy")),
        });
        assert_eq!(
            encode_server_message(PROTOCOL_VERSION, &message).unwrap(),
            codec::encode(&message).unwrap()
        );
    }

    #[test]
    fn a_version_this_build_does_not_speak_is_an_error_not_a_guess() {
        let payload = codec::encode(&RequestFrame {
            id: 7,
            request: Request::Status,
        })
        .unwrap();
        for version in [0, PROTOCOL_VERSION + 1] {
            assert!(matches!(
                decode_request(version, &payload),
                Err(FrameError::Version(v)) if v == version
            ));
            let message = ServerMessage::Reply(ReplyFrame {
                id: 7,
                result: Err(ErrorReply::new(ErrorCode::Busy, "busy")),
            });
            assert!(matches!(
                encode_server_message(version, &message),
                Err(FrameError::Version(v)) if v == version
            ));
        }
    }
}

/// The evolution rule carried out: a hypothetical protocol 2 adds an optional field, `priority`,
/// to a submission, without a new request variant and without a new handler.
///
/// In the real change, `crate::SubmitJob` itself gains the field (the handler reads it), the
/// released protocol 1 types are frozen in `compat::v1` (a copy of today's `Request`,
/// `RequestFrame`, `SubmitJob`; types that did not change are used from the crate as they are),
/// and [`decode_request`] gets the arm `1 => decode::<v1::RequestFrame>(payload).map(upgrade)`.
/// Here, the crate's types play protocol 1 (which they are) and module `protocol2` plays the
/// current types after the change.
#[cfg(test)]
mod example {
    use crate::codec::{self, FrameError};
    use crate::{
        Command, ExecSpec, JobRef, JobSpec, KillRequest, ListQuery, LogsQuery, NextQuery,
        PauseRequest, PauseTarget, QueueSettings, ScheduleSpec, WaitQuery, WatchQuery,
    };
    use serde::{Deserialize, Serialize};
    use std::time::Instant;

    /// The current types after protocol 2 (in the real change: the crate's own).
    mod protocol2 {
        use super::*;

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct SubmitJob {
            pub job: JobSpec,
            pub exec: ExecSpec,
            pub journal: bool,
            /// New in protocol 2: appended at the end; `None` is what protocol 1 meant.
            pub priority: Option<u8>,
        }

        /// The same variants in the same order; only `Submit`'s payload changed.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Request {
            Submit(Box<SubmitJob>),
            List(ListQuery),
            Show(JobRef),
            Cancel(JobRef),
            Status,
            Logs(LogsQuery),
            Next(NextQuery),
            Pause(PauseRequest),
            Resume(PauseTarget),
            Skip(JobRef),
            Trigger(JobRef),
            SetQueue(QueueSettings),
            Queues,
            Wait(WaitQuery),
            Kill(KillRequest),
            Retry(JobRef),
            Remove(JobRef),
            Watch(WatchQuery),
            Reload,
            Metrics,
            JobFile(JobRef),
            Edit(crate::EditJob),
        }

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct RequestFrame {
            pub id: u64,
            pub request: Request,
        }
    }

    /// `compat::v1::upgrade`: a protocol 1 request as the current types, once, at the edge.
    fn upgrade(old: crate::RequestFrame) -> protocol2::RequestFrame {
        use crate::Request as Old;
        use protocol2::Request as New;
        let request = match old.request {
            Old::Submit(submit) => {
                let crate::SubmitJob { job, exec, journal } = *submit;
                New::Submit(Box::new(protocol2::SubmitJob {
                    job,
                    exec,
                    journal,
                    priority: None,
                }))
            }
            Old::List(q) => New::List(q),
            Old::Show(job) => New::Show(job),
            Old::Cancel(job) => New::Cancel(job),
            Old::Status => New::Status,
            Old::Logs(q) => New::Logs(q),
            Old::Next(q) => New::Next(q),
            Old::Pause(p) => New::Pause(p),
            Old::Resume(target) => New::Resume(target),
            Old::Skip(job) => New::Skip(job),
            Old::Trigger(job) => New::Trigger(job),
            Old::SetQueue(settings) => New::SetQueue(settings),
            Old::Queues => New::Queues,
            Old::Wait(q) => New::Wait(q),
            Old::Kill(kill) => New::Kill(kill),
            Old::Retry(job) => New::Retry(job),
            Old::Remove(job) => New::Remove(job),
            Old::Watch(q) => New::Watch(q),
            Old::Reload => New::Reload,
            Old::Metrics => New::Metrics,
            Old::JobFile(job) => New::JobFile(job),
            Old::Edit(edit) => New::Edit(edit),
        };
        protocol2::RequestFrame {
            id: old.id,
            request,
        }
    }

    /// [`super::decode_request`] after the change.
    fn decode_request(version: u32, payload: &[u8]) -> Result<protocol2::RequestFrame, FrameError> {
        match version {
            2 => codec::decode(payload),
            1 => codec::decode::<crate::RequestFrame>(payload).map(upgrade),
            other => Err(FrameError::Version(other)),
        }
    }

    fn submit_v1() -> crate::RequestFrame {
        crate::RequestFrame {
            id: 41,
            request: crate::Request::Submit(Box::new(crate::SubmitJob {
                job: JobSpec {
                    name: Some("nightly-backup".into()),
                    env: vec![("LANG".into(), "C.UTF-8".into())],
                    queue: Some("backups".into()),
                    ..JobSpec::new(
                        Command::Argv(vec![
                            "/usr/local/bin/backup".into(),
                            "--full".into(),
                            "/srv".into(),
                        ]),
                        "/var/lib/backup",
                        ScheduleSpec::Cron {
                            expr: "30 2 * * *".into(),
                            tz: Some("Europe/Paris".into()),
                        },
                    )
                },
                exec: ExecSpec {
                    retries: Some(3),
                    timeout_ms: Some(7_200_000),
                    ..ExecSpec::default()
                },
                journal: true,
            })),
        }
    }

    #[test]
    fn a_protocol_1_submission_reaches_the_current_handler_with_the_default() {
        let old = submit_v1();
        let payload = codec::encode(&old).unwrap();
        let new = decode_request(1, &payload).unwrap();
        let (crate::Request::Submit(was), protocol2::Request::Submit(is)) =
            (old.request, new.request)
        else {
            panic!("a submission stays a submission");
        };
        assert_eq!(new.id, 41);
        assert_eq!(
            (is.job, is.exec, is.journal),
            (was.job, was.exec, was.journal)
        );
        assert_eq!(is.priority, None);
    }

    #[test]
    fn a_protocol_2_submission_carries_the_field() {
        let crate::Request::Submit(submit) = submit_v1().request else {
            unreachable!("submit_v1 is a submission");
        };
        let crate::SubmitJob { job, exec, journal } = *submit;
        let frame = protocol2::RequestFrame {
            id: 42,
            request: protocol2::Request::Submit(Box::new(protocol2::SubmitJob {
                job,
                exec,
                journal,
                priority: Some(5),
            })),
        };
        let payload = codec::encode(&frame).unwrap();
        assert_eq!(decode_request(2, &payload).unwrap(), frame);
    }

    #[test]
    fn the_version_decides_the_types_not_the_bytes() {
        // A protocol 1 submission is not a protocol 2 one (postcard is positional): decoded with
        // the wrong version's types it is refused, which is why the handshake's version is used.
        let payload = codec::encode(&submit_v1()).unwrap();
        assert!(codec::decode::<protocol2::RequestFrame>(&payload).is_err());
        // Requests whose types did not change are the same bytes in both versions.
        for request in [
            crate::Request::Status,
            crate::Request::Show(JobRef::Name("x".into())),
        ] {
            let payload = codec::encode(&crate::RequestFrame { id: 1, request }).unwrap();
            assert_eq!(
                codec::encode(&decode_request(1, &payload).unwrap()).unwrap(),
                payload
            );
        }
    }

    /// What the upgrade costs, for the crate docs. Run with
    /// `cargo test -p chime-proto --release -- --ignored --nocapture upgrade_cost`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn upgrade_cost() {
        const N: u32 = 1_000_000;
        let v1 = codec::encode(&submit_v1()).unwrap();
        let v2 = codec::encode(&decode_request(1, &v1).unwrap()).unwrap();
        let time = |what: &str, f: &dyn Fn() -> bool| {
            let start = Instant::now();
            let mut ok = 0u32;
            for _ in 0..N {
                ok += u32::from(std::hint::black_box(f()));
            }
            assert_eq!(ok, N);
            let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
            println!("{what}: {ns:.0} ns per frame");
        };
        println!(
            "a submission: {} bytes (v1), {} bytes (v2)",
            v1.len(),
            v2.len()
        );
        time("today, direct decode", &|| {
            codec::decode::<crate::RequestFrame>(std::hint::black_box(&v1)).is_ok()
        });
        time("today, through compat (protocol 1)", &|| {
            crate::codec::decode_request(crate::PROTOCOL_VERSION, std::hint::black_box(&v1)).is_ok()
        });
        time("protocol 2 client, direct decode", &|| {
            decode_request(2, std::hint::black_box(&v2)).is_ok()
        });
        time("protocol 1 client, decode and upgrade", &|| {
            decode_request(1, std::hint::black_box(&v1)).is_ok()
        });
        let status = codec::encode(&crate::RequestFrame {
            id: 1,
            request: crate::Request::Status,
        })
        .unwrap();
        time("status, protocol 2 direct", &|| {
            decode_request(2, std::hint::black_box(&status)).is_ok()
        });
        time("status, protocol 1 decode and upgrade", &|| {
            decode_request(1, std::hint::black_box(&status)).is_ok()
        });
    }
}
