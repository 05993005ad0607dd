//! `chimectl`: the command-line client of chimed.
//!
//! `main` parses arguments and maps the result of [`run`] to an exit status; errors are printed
//! once, as `chimectl: <what failed>: <why>; <remedy>`.

#[macro_use]
mod output;
mod cli;
mod client;
mod commands;
mod socket;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Cmd, Lazy};
use client::Client;
use socket::Socket;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_quiet(cli.quiet);
    if let Some((path, why)) = misused(&cli) {
        usage_error(path, why);
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("chimectl: {err:#}");
            match err.downcast_ref::<socket::Unreachable>() {
                Some(_) => ExitCode::from(socket::Unreachable::EXIT),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A usage error clap's rules cannot express (see [`cli::AddArgs::misused`]), if any.
fn misused(cli: &Cli) -> Option<(&'static [&'static str], String)> {
    match &cli.command {
        Cmd::Add(Lazy(args)) => {
            let raw: Vec<String> = std::env::args().collect();
            // add's own options, without building the rest of chimectl's command line.
            let own: Vec<String> =
                <cli::AddArgs as clap::Args>::augment_args(clap::Command::new("add"))
                    .get_arguments()
                    .filter_map(|a| a.get_long().map(str::to_owned))
                    .collect();
            args.misused(&raw, &own).map(|why| (&["add"][..], why))
        }
        Cmd::Timer(cli::TimerCmd::Add(args)) => args
            .when
            .misapplied()
            .map(|why| (&["timer", "add"][..], why)),
        _ => None,
    }
}

/// Prints a usage error of the subcommand at `path` as clap does (with its usage line), and
/// exits with 2.
fn usage_error(path: &[&str], message: String) -> ! {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    let mut sub = &mut command;
    for name in path {
        sub = sub
            .find_subcommand_mut(name)
            .expect("a subcommand of chimectl");
    }
    sub.error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let socket = Socket::choose(cli.socket.clone());
        let json = cli.json;
        match cli.command {
            // Bad input is reported before connecting, whether or not the daemon is up.
            Cmd::Add(Lazy(args)) => {
                let wait = args.wait;
                let spec = commands::add::spec(*args)?;
                let mut client = Client::connect(&socket).await?;
                commands::add::submit(&mut client, spec, wait, json).await
            }
            Cmd::Config(cli::ConfigCmd::Check { path }) => commands::config::check(path, json),
            // It connects twice: to read the job's file, then after the editor to apply it.
            Cmd::Edit { job } => commands::edit::run(&socket, &job, json).await,
            Cmd::Completions { shell } => {
                use clap::CommandFactory;
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "chimectl", &mut out);
                out!("{}", String::from_utf8_lossy(&out));
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Man { dir } => commands::man::write(&dir),
            Cmd::Reload => {
                let mut client = Client::connect(&socket).await?;
                commands::config::reload(&mut client, json).await
            }
            Cmd::Wait { job, timeout } => {
                let mut client = Client::connect(&socket).await?;
                if !json {
                    commands::wait::say_which_run(&mut client, &job).await;
                }
                commands::wait::wait(
                    &mut client,
                    chime_proto::JobRef::parse(&job),
                    None,
                    timeout.as_deref(),
                    json,
                )
                .await
            }
            command => {
                let mut client = Client::connect(&socket).await?;
                let done = match command {
                    Cmd::Add(_)
                    | Cmd::Edit { .. }
                    | Cmd::Wait { .. }
                    | Cmd::Config(_)
                    | Cmd::Reload
                    | Cmd::Completions { .. }
                    | Cmd::Man { .. } => {
                        unreachable!("handled above")
                    }
                    Cmd::Watch(Lazy(args)) => commands::watch::run(&mut client, args, json).await,
                    Cmd::Timer(cli::TimerCmd::Add(args)) => {
                        commands::timer::add(&mut client, args, json).await
                    }
                    Cmd::Metrics => commands::config::metrics(&mut client).await,
                    Cmd::Kill { job, signal } => {
                        commands::control::kill(&mut client, &job, &signal, json).await
                    }
                    Cmd::Retry { job } => commands::control::retry(&mut client, &job, json).await,
                    Cmd::Rm { job } => commands::control::remove(&mut client, &job, json).await,
                    Cmd::Ls(Lazy(args)) => commands::ls::run(&mut client, args, json).await,
                    Cmd::Show { job } => commands::show::run(&mut client, &job, json).await,
                    Cmd::Cancel { job } => commands::cancel::run(&mut client, &job, json).await,
                    Cmd::Logs(Lazy(args)) => commands::logs::run(&mut client, args, json).await,
                    Cmd::Status => commands::status::run(&mut client, json).await,
                    Cmd::Next(Lazy(args)) => commands::next::run(&mut client, args, json).await,
                    Cmd::Pause(Lazy(args)) => commands::pause::pause(&mut client, args, json).await,
                    Cmd::Resume(Lazy(args)) => {
                        commands::pause::resume(&mut client, args, json).await
                    }
                    Cmd::Skip { job } => commands::pause::skip(&mut client, &job, json).await,
                    Cmd::Trigger { job } => commands::pause::trigger(&mut client, &job, json).await,
                    Cmd::Queue(cmd) => commands::queue::run(&mut client, cmd, json).await,
                };
                done.map(|()| ExitCode::SUCCESS)
            }
        }
    })
}
