use super::*;
use chime_proto::{Command, JobId};
use proptest::prelude::*;
use std::collections::HashMap;

const NOW: Ms = 1_000_000;
const OPEN: RunId = RunId(7);
const OTHER: RunId = RunId(6);

fn job(state: State) -> Job {
    Job {
        id: JobId(1),
        name: None,
        owner: 1000,
        created_ms: 0,
        command: Command::Argv(vec!["/bin/true".into()]),
        cwd: "/".into(),
        env: vec![],
        attempts: u32::from(matches!(state, State::Running { .. })),
        state,
        last_outcome: None,
    }
}

fn running(pid: Option<u32>, cancel_requested: bool) -> State {
    State::Running {
        run: OPEN,
        due_ms: 500,
        started_ms: 600,
        pid,
        cancel_requested,
    }
}

/// Every state a job can be in, with a label.
fn states() -> Vec<(&'static str, State)> {
    vec![
        ("scheduled", State::Scheduled { due_ms: 500 }),
        ("starting", running(None, false)),
        ("running", running(Some(42), false)),
        ("starting+cancel", running(None, true)),
        ("running+cancel", running(Some(42), true)),
        ("succeeded", State::Succeeded { at_ms: 1 }),
        ("failed", State::Failed { at_ms: 1 }),
        ("cancelled", State::Cancelled { at_ms: 1 }),
    ]
}

/// Every event, with a label, for the open run and for another run.
fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("due", Event::Due { run: OPEN }),
        ("spawned", Event::Spawned { run: OPEN, pid: 43 }),
        (
            "spawned-other",
            Event::Spawned {
                run: OTHER,
                pid: 43,
            },
        ),
        (
            "spawn-failed",
            Event::SpawnFailed {
                run: OPEN,
                error: "enoent".into(),
            },
        ),
        (
            "spawn-failed-other",
            Event::SpawnFailed {
                run: OTHER,
                error: "enoent".into(),
            },
        ),
        (
            "exit-0",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Exited(0),
            },
        ),
        (
            "exit-3",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Exited(3),
            },
        ),
        (
            "signaled",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Signaled(9),
            },
        ),
        (
            "exit-other",
            Event::Exited {
                run: OTHER,
                outcome: Outcome::Exited(0),
            },
        ),
        ("interrupted", Event::Interrupted { run: OPEN }),
        ("interrupted-other", Event::Interrupted { run: OTHER }),
        ("lost", Event::Lost),
        ("cancel", Event::Cancel),
    ]
}

/// What each pair must give, written as a table: the new state, or the refusal.
fn expected(state: &str, event: &str) -> &'static str {
    let is_final = matches!(state, "succeeded" | "failed" | "cancelled");
    let cancelling = state.ends_with("+cancel");
    match (state, event) {
        (_, "cancel") if is_final => "refused:final",
        (_, "due" | "lost") if is_final => "refused:not-applicable",
        _ if is_final => "refused:stale",
        ("scheduled", "due") => "running",
        ("scheduled", "cancel") => "cancelled",
        ("scheduled", "lost") => "refused:not-applicable",
        ("scheduled", _) => "refused:stale",
        (_, "due") => "refused:not-applicable",
        (_, e) if e.ends_with("-other") => "refused:stale",
        (_, "spawned" | "cancel") => "running",
        _ if cancelling => "cancelled",
        (_, "exit-0") => "succeeded",
        (_, "spawn-failed" | "exit-3" | "signaled" | "interrupted" | "lost") => "failed",
        _ => unreachable!("pair {state} / {event} missing from the table"),
    }
}

#[test]
fn every_state_and_event_pair() {
    for (state_label, state) in states() {
        for (event_label, event) in events() {
            let before = job(state.clone());
            let got = match step(&before, event.clone(), NOW) {
                Ok(step) => step.job.state.kind().as_str().to_owned(),
                Err(Refusal::Final(_)) => "refused:final".into(),
                Err(Refusal::Stale) => "refused:stale".into(),
                Err(Refusal::NotApplicable { .. }) => "refused:not-applicable".into(),
            };
            assert_eq!(
                got,
                expected(state_label, event_label),
                "{state_label} + {event_label}"
            );
        }
    }
}

#[test]
fn due_opens_a_run_and_asks_for_a_spawn() {
    let s = step(
        &job(State::Scheduled { due_ms: 500 }),
        Event::Due { run: OPEN },
        NOW,
    )
    .unwrap();
    assert_eq!(s.actions, vec![Action::Spawn { run: OPEN }]);
    let run = s.run.expect("a run record");
    assert_eq!(
        (run.id, run.attempt, run.due_ms, run.started_ms),
        (OPEN, 1, 500, NOW)
    );
    assert_eq!((run.pid, run.outcome), (None, None));
    assert_eq!(s.job.attempts, 1);
}

#[test]
fn spawned_records_the_pid() {
    let s = step(
        &job(running(None, false)),
        Event::Spawned { run: OPEN, pid: 43 },
        NOW,
    )
    .unwrap();
    assert!(matches!(s.job.state, State::Running { pid: Some(43), .. }));
    assert_eq!(s.run.unwrap().pid, Some(43));
    assert!(s.actions.is_empty());
}

#[test]
fn cancel_of_a_running_job_terminates_it_once_its_pid_is_known() {
    let s = step(&job(running(Some(42), false)), Event::Cancel, NOW).unwrap();
    assert_eq!(s.actions, vec![Action::Terminate { run: OPEN }]);
    assert!(matches!(
        s.job.state,
        State::Running {
            cancel_requested: true,
            ..
        }
    ));

    // Not spawned yet: nothing to signal; the signal goes out when the pid arrives.
    let s = step(&job(running(None, false)), Event::Cancel, NOW).unwrap();
    assert!(s.actions.is_empty());
    let s = step(&s.job, Event::Spawned { run: OPEN, pid: 43 }, NOW).unwrap();
    assert_eq!(s.actions, vec![Action::Terminate { run: OPEN }]);
}

#[test]
fn closing_a_run_records_its_end() {
    let s = step(
        &job(running(Some(42), false)),
        Event::Exited {
            run: OPEN,
            outcome: Outcome::Exited(3),
        },
        NOW,
    )
    .unwrap();
    let run = s.run.unwrap();
    assert_eq!(run.finished_ms, Some(NOW));
    assert_eq!(run.outcome, Some(Outcome::Exited(3)));
    assert_eq!(run.pid, Some(42));
    assert_eq!(s.job.last_outcome, Some(Outcome::Exited(3)));
    assert_eq!(s.job.state, State::Failed { at_ms: NOW });

    let s = step(&job(running(Some(42), false)), Event::Lost, NOW).unwrap();
    assert_eq!(s.run.unwrap().outcome, Some(Outcome::Lost));
}

#[test]
fn refusing_a_cancel_of_a_finished_job_says_how_it_ended() {
    let err = step(&job(State::Succeeded { at_ms: 1 }), Event::Cancel, NOW).unwrap_err();
    assert_eq!(err.to_string(), "job 1 has already succeeded");
}

// ---- property test: random event sequences keep the invariants ----

fn any_event() -> impl Strategy<Value = Event> {
    let run = (5u64..9).prop_map(RunId);
    prop_oneof![
        run.clone().prop_map(|run| Event::Due { run }),
        (run.clone(), 1u32..100).prop_map(|(run, pid)| Event::Spawned { run, pid }),
        run.clone().prop_map(|run| Event::SpawnFailed {
            run,
            error: "x".into()
        }),
        (run.clone(), -1i32..3).prop_map(|(run, code)| Event::Exited {
            run,
            outcome: Outcome::Exited(code)
        }),
        (run.clone(), 1i32..16).prop_map(|(run, sig)| Event::Exited {
            run,
            outcome: Outcome::Signaled(sig)
        }),
        run.prop_map(|run| Event::Interrupted { run }),
        Just(Event::Lost),
        Just(Event::Cancel),
    ]
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(
        events in proptest::collection::vec((any_event(), 0i64..1000), 0..60)
    ) {
        let mut current = job(State::Scheduled { due_ms: 500 });
        let mut now = NOW;
        // The model of the stores' indexes, driven only by what `step` returns.
        let mut runs: HashMap<RunId, Run> = HashMap::new();
        let mut opened = 0u32;
        let mut cancels = 0u32;
        for (event, dt) in events {
            now += dt;
            let was_final = current.state.is_final();
            let is_cancel = event == Event::Cancel;
            match step(&current, event.clone(), now) {
                Err(_) => continue,
                Ok(s) => {
                    prop_assert!(!was_final, "a final state changed: {:?} by {:?}", current.state, event);
                    if is_cancel { cancels += 1; }
                    if let Some(run) = &s.run {
                        // A run opens once with no outcome, and once closed stays closed.
                        match runs.get(&run.id) {
                            None => {
                                prop_assert!(run.outcome.is_none());
                                opened += 1;
                                prop_assert_eq!(run.attempt, opened);
                            }
                            Some(old) => {
                                prop_assert!(old.outcome.is_none(), "closed run {} changed", run.id);
                                prop_assert_eq!(old.started_ms, run.started_ms);
                            }
                        }
                        runs.insert(run.id, run.clone());
                    }
                    for action in &s.actions {
                        match action {
                            Action::Spawn { run } | Action::Terminate { run } => {
                                prop_assert_eq!(Some(*run), s.job.state.open_run());
                            }
                        }
                    }
                    current = s.job;
                }
            }
            // The job is due exactly when scheduled, has an open run exactly when running, and
            // the open run is the only run without an outcome.
            prop_assert_eq!(current.state.due_ms().is_some(), current.state.kind() == JobState::Scheduled);
            let open: Vec<_> = runs.values().filter(|r| r.outcome.is_none()).map(|r| r.id).collect();
            match current.state.open_run() {
                Some(run) => prop_assert_eq!(open, vec![run]),
                None => prop_assert!(open.is_empty()),
            }
            prop_assert_eq!(current.attempts, opened);
            if current.state.kind() == JobState::Cancelled {
                prop_assert!(cancels > 0);
            }
            if current.state.kind() == JobState::Succeeded {
                prop_assert!(current.last_outcome.as_ref().is_some_and(Outcome::is_success));
            }
        }
    }
}
