//! `chimed`: parse arguments, set up logging, run, turn the result into an exit code.

use chime_daemon::config::{Args, Config, LogTarget, config_path};
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
    // The configuration file first: it may say where to log. Its errors go to stderr.
    let uid = nix::unistd::getuid().as_raw();
    let settings = match chime_daemon::config::file::read(&config_path(&args), uid) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("chimed: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The command line wins over the file; auto picks the journal under systemd.
    chime_daemon::logging::init(args.log.or(settings.log).unwrap_or(LogTarget::Auto));
    let config = Config::resolve(&args, &settings);
    match chime_daemon::run(config, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
