//! `chimectl man DIR` (hidden; systemd/install.sh runs it): the manual pages, section 1, made
//! from the same definitions as `--help`: `chimectl.1`, and one page per subcommand
//! (`chimectl-add.1`, `chimectl-queue-set.1`, ...), as git and cargo name theirs.

use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::path::Path;
use std::process::ExitCode;

pub fn write(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = Cli::command();
    command.build();
    let mut written = 0;
    write_page(dir, &command, "chimectl", &mut written)?;
    outln!("wrote {written} manual pages to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `command`'s page as `NAME.1`, then its subcommands' as `NAME-SUB.1`.
fn write_page(
    dir: &Path,
    command: &clap::Command,
    name: &str,
    written: &mut usize,
) -> anyhow::Result<()> {
    if command.is_hide_set() {
        return Ok(());
    }
    let page = command
        .clone()
        .name(name.to_owned())
        .display_name(name.to_owned());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .with_context(|| format!("cannot render the page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in command.get_subcommands() {
        if sub.get_name() != "help" {
            write_page(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
        }
    }
    Ok(())
}
