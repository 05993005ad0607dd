//! `chimed`: parse arguments, set up logging, run, turn the result into an exit code.

use chime_daemon::config::{Args, Config, LogTarget, Settings, config_path};
use clap::Parser;
use std::process::ExitCode;

/// `chimed --man`: the manual page, section 8 (a daemon), from the same definitions as `--help`.
fn man_page() -> ExitCode {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Args::command()).section("8");
    let mut page = Vec::new();
    if let Err(err) = man.render(&mut page) {
        eprintln!("chimed: cannot render the manual page: {err}");
        return ExitCode::FAILURE;
    }
    use std::io::Write;
    match std::io::stdout().write_all(&page) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimed: cannot write the manual page: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // The helpers that act as another user (see `as_user`): no logging, no runtime, nothing
    // read from the environment; their order comes on stdin.
    if let Some(mode) = std::env::args_os().nth(1)
        && let Some(code) = mode.to_str().and_then(chime_daemon::as_user::main)
    {
        return ExitCode::from(u8::try_from(code).unwrap_or(126));
    }
    // Nothing inherited reaches chimed's jobs, and what chimed creates is its own.
    chime_daemon::fds::close_inherited();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    if args.man {
        return man_page();
    }
    if args.check_config {
        return chime_daemon::config::check::run(args.check_path.clone(), args.json);
    }
    // The configuration file first: it may say where to log. Its errors go to stderr.
    let settings = match settings(&args) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("chimed: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The command line wins over the file; auto picks the journal under systemd.
    chime_daemon::logging::init(args.log.or(settings.log).unwrap_or(LogTarget::Auto));
    let config = match Config::resolve(&args, &settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chimed: {err}");
            return ExitCode::FAILURE;
        }
    };
    match chime_daemon::run(config, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file's settings (none when it is missing).
fn settings(args: &Args) -> anyhow::Result<Settings> {
    let uid = nix::unistd::getuid().as_raw();
    Ok(chime_daemon::config::file::read(&config_path(args)?, uid)?)
}
