//! Bytes a client could send to chimed: framing, handshake, request decoding, the request
//! handlers of a real daemon, and the encoding of their replies. See `src/lib.rs` for what an
//! input is and what must hold.

#![no_main]

use chime_fuzz::Harness;
use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};

/// One daemon per fuzzing process, started on the first input (see `chime_fuzz::sandbox` for
/// why not before).
static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| {
        let dir = chime_fuzz::process_dir();
        chime_fuzz::remove_at_exit(dir.clone());
        Mutex::new(Harness::new(dir))
    });
    harness
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .run(data);
});
