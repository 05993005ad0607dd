//! `chimed`: parse arguments, set up logging, run, turn the result into an exit code.

use chime_daemon::config::{Args, Config};
use chime_daemon::runner::run_as;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The exec helper for jobs of other users: no logging, no runtime, just drop and exec.
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(run_as::ARG) {
        return ExitCode::from(run_as::main(&raw[2..]) as u8);
    }
    let args = Args::parse();
    chime_daemon::logging::init();
    match chime_daemon::run(Config::resolve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
