//! `vmfleet completions SHELL` and `vmfleet man`: a shell completion script (clap_complete) and a
//! roff man page (clap_mangen), both generated from the CLI's own declaration ([`crate::cli`]), so
//! they never drift from it, and printed to stdout.
//!
//! Must not: panic on a closed stdout (`vmfleet man | head`): both are rendered into memory first,
//! and a broken pipe ends the output quietly.

use crate::cli::Cli;
use crate::exit::Status;
use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vmfleet", &mut script);
    script
}

/// The man page, in roff: the top-level page, then one section per subcommand (`vmfleet ctl`,
/// ...) with its synopsis, description, options and subcommands.
pub fn man_page() -> Result<Vec<u8>> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("rendering the man page")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("vmfleet {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)?;
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        if sub.has_subcommands() {
            man.render_subcommands_section(&mut section)?;
        }
        page.extend(format!(".SH \"{}\"\n", name.to_uppercase()).into_bytes());
        page.extend(as_subsections(&section));
    }
    Ok(page)
}

/// A subcommand's sections become subsections (`.SH X` to `.SS X`) of its own section; roff's
/// preamble, already at the top of the page, is left out.
fn as_subsections(section: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(section);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(".ie \\n(.g") || line.starts_with(".el .ds Aq") {
            continue;
        }
        match line.strip_prefix(".SH ") {
            Some(heading) => out.push_str(&format!(".SS {heading}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

/// Write `bytes` to stdout; a closed pipe is not an error.
fn print(bytes: &[u8]) -> Result<Status> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Status::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Status::Success),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// `vmfleet completions SHELL`.
pub fn completions(shell: Shell) -> Result<Status> {
    print(&completion_script(shell))
}

/// `vmfleet man`.
pub fn man() -> Result<Status> {
    print(&man_page()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            for sub in ["replay", "ctl", "serve", "set-model", "completions"] {
                assert!(script.contains(sub), "{shell}: no {sub} in\n{script}");
            }
        }
    }

    #[test]
    fn the_man_page_documents_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH vmfleet"),
            "{page}"
        );
        for sub in [
            "VMFLEET REPLAY",
            "VMFLEET CTL",
            "VMFLEET SERVE",
            "VMFLEET MAN",
        ] {
            assert!(
                page.contains(&format!(".SH \"{sub}\"")),
                "no {sub} in the man page"
            );
        }
        assert!(
            page.contains("set\\-model"),
            "ctl's subcommands are missing"
        );
        assert!(page.contains("\\-\\-record"), "options are missing");
        assert_eq!(page.matches(".SH NAME").count(), 1);
    }
}
