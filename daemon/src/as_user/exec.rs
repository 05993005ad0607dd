//! The [`super::RUN_AS`] helper: become the job's owner, enter the working directory, execute the
//! command with the job's environment.
//!
//! Failures are printed to stderr (the run's log) and end the helper with exit code 126 (the
//! account, the privileges or the working directory) or 127 (the program could not be executed),
//! as shells do. On success it does not return: the job's program replaces it.

use super::{Failure, Order, Task, become_user};
use std::os::unix::process::CommandExt;

/// Carries out an [`Task::Exec`] order.
pub fn run(order: Order) -> Result<i32, Failure> {
    let Task::Exec { argv, env } = order.task else {
        return Err(Failure::new(126, "the run-as helper was given a check"));
    };
    let Some(program) = argv.first() else {
        return Err(Failure::new(127, "the command is empty"));
    };
    let user = become_user(order.uid, order.user.as_deref())?;
    std::env::set_current_dir(&order.cwd).map_err(|e| {
        Failure::new(
            126,
            format!(
                "cannot enter working directory {} as {}: {e}",
                order.cwd, user.name
            ),
        )
    })?;
    let mut command = std::process::Command::new(program);
    command.args(&argv[1..]).env_clear();
    for (key, value) in [
        ("HOME", user.dir.display().to_string()),
        ("USER", user.name.clone()),
        ("LOGNAME", user.name.clone()),
        ("SHELL", user.shell.display().to_string()),
    ] {
        if !env.iter().any(|(k, _)| k == key) {
            command.env(key, value);
        }
    }
    // Installed by the execve below, after the uid switch; a program without a slash is looked up
    // in this environment's PATH, as the user.
    command.envs(env);
    let err = command.exec();
    Err(Failure::new(
        127,
        format!("cannot execute {program}: {err}"),
    ))
}
