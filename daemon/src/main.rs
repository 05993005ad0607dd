//! `chimed`: parse arguments, set up logging, run, turn the result into an exit code.

use chime_daemon::config::{Args, Config, LogTarget, Settings, config_path};
use clap::Parser;
use std::process::ExitCode;

/// mimalloc, not glibc's malloc: the engine thread allocates for every change it applies
/// (records, events, the jobs the state machine returns), and allocation was 11-16% of its CPU.
/// Measured side by side (bench-submit 32 x 8, bench-timers' 100,000 at one instant): 1.14-1.34x
/// the acknowledged submissions, 5.7-6.3 against 6.6-8.3 us of engine CPU per submission, and
/// 6.7-7.5 against 7.5-8.2 us per firing. It costs memory: RSS 11 MiB idle (glibc: 10), 108 MiB
/// with a million jobs loaded (91) and 32 MiB restarted over them (21). Built without its
/// transparent-huge-page hint (`no_thp`), which alone made an idle chimed 22 MiB; that hint is
/// only not asked for: the process's THP setting is left alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
