//! The suites whose behaviour both stores must share, run again with every daemon keeping its
//! jobs in PostgreSQL: each `Daemon` of these tests gets a private cluster (`tests/src/pg.rs`)
//! and `--store postgresql://...` (see `chime_tests::store_under_test`: a test binary named
//! `on_postgres` chooses PostgreSQL, as `CHIME_TEST_STORE=postgres` does for any other).
//!
//! The same test functions as the redb runs, compiled a second time: recurring schedules,
//! catch-up, overlap and pauses; the event log and `watch`; the lifecycle, execution and edits
//! of jobs; users' fairness and ownership; job files; and durability (SIGKILL and SIGTERM, the
//! SIGKILL campaign in miniature). Tests about the redb file itself say they are skipped.
//! Without PostgreSQL's server, every test here is skipped, saying so.

#[path = "durability.rs"]
mod durability;
#[path = "edit.rs"]
mod edit;
#[path = "events.rs"]
mod events;
#[path = "execution.rs"]
mod execution;
#[path = "fairness.rs"]
mod fairness;
#[path = "job_files.rs"]
mod job_files;
#[path = "lifecycle.rs"]
mod lifecycle;
#[path = "ownership.rs"]
mod ownership;
#[path = "recurring.rs"]
mod recurring;
