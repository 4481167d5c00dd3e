//! Man pages and shell completions, generated from the clap definitions in
//! [`super::args`] (and notebook.toml(5) from the shipped, commented
//! `etc/notebook.toml`), so they always match what the binaries accept.
//!
//! `nbctl generate-docs DIR` (what `./dev docs DIR` runs) writes:
//! - `DIR/man/man8/notebookd.8`, `nbctl.8`, and one `nbctl-VERB.8` per verb
//! - `DIR/man/man5/notebook.toml.5`
//! - `DIR/completions/bash/{nbctl,notebookd}`
//! - `DIR/completions/zsh/{_nbctl,_notebookd}`
//! - `DIR/completions/fish/{nbctl,notebookd}.fish`

use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use roff::{Roff, bold, italic, roman};

use super::CliError;
use super::args::{NbctlArgs, NotebookdArgs};

/// The shipped config, the source of notebook.toml(5).
const SHIPPED_CONFIG: &str = include_str!("../../etc/notebook.toml");

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("cannot write {}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8], written: &mut Vec<PathBuf>) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    std::fs::write(path, bytes).map_err(io_error(path))?;
    written.push(path.to_owned());
    Ok(())
}

/// A section of a page beyond what clap knows: a title and tagged paragraphs.
struct Extra {
    title: &'static str,
    intro: &'static str,
    items: &'static [(&'static str, &'static str)],
}

fn render_extra(roff: &mut Roff, extra: &Extra) {
    roff.control("SH", [extra.title]);
    if !extra.intro.is_empty() {
        roff.text([roman(extra.intro)]);
    }
    for (tag, text) in extra.items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*text)]);
    }
}

/// The date of the pages: SOURCE_DATE_EPOCH's, for reproducible packages.
fn date() -> Option<String> {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    ))
}

fn page(cmd: Command, section: &str, extras: &[Extra]) -> Result<Vec<u8>, CliError> {
    let manual = if section == "5" {
        "File Formats"
    } else {
        "System Administration"
    };
    let mut man = Man::new(cmd.clone())
        .section(section)
        .manual(manual)
        .source(format!("notebookd {}", crate::VERSION));
    if let Some(d) = date() {
        man = man.date(d);
    }
    let mut out = Vec::new();
    let failed = |e: std::io::Error| CliError::Failed(format!("cannot render a man page: {e}"));
    man.render_title(&mut out).map_err(failed)?;
    man.render_name_section(&mut out).map_err(failed)?;
    man.render_synopsis_section(&mut out).map_err(failed)?;
    man.render_description_section(&mut out).map_err(failed)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out).map_err(failed)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out).map_err(failed)?;
    }
    let mut roff = Roff::new();
    for extra in extras {
        render_extra(&mut roff, extra);
    }
    roff.to_writer(&mut out).map_err(failed)?;
    Ok(out)
}

const EXIT_STATUS: Extra = Extra {
    title: "EXIT STATUS",
    intro: "",
    items: &[
        ("0", "Success."),
        (
            "1",
            "Failure: the change could not be made (nothing was written), a file could not be read or written, or the daemon refused a reload.",
        ),
        (
            "2",
            "Bad usage: an unknown option, command or config key, a value of the wrong type, a malformed origin or host name.",
        ),
        (
            "3",
            "nbctl status only: notebookd is not running (no control socket).",
        ),
    ],
};

const NBCTL_ENVIRONMENT: Extra = Extra {
    title: "ENVIRONMENT",
    intro: "",
    items: &[(
        "NOTEBOOK_CONFIG",
        "The config file, when --config is not given (default /etc/notebook/notebook.toml).",
    )],
};

const FILES: Extra = Extra {
    title: "FILES",
    intro: "",
    items: &[
        (
            "/etc/notebook/notebook.toml",
            "The config file; see notebook.toml(5).",
        ),
        (
            "/etc/notebook/tls/cert.pem, /etc/notebook/tls/key.pem",
            "The TLS certificate chain and private key (tls.cert, tls.key).",
        ),
        (
            "/var/lib/notebook",
            "State: notebooks (by default), the session secret, the session table (sessions.json) and the API tokens' hashes (tokens.json).",
        ),
        (
            "/run/notebook/control.sock",
            "The control socket of the running daemon (nbctl status, nbctl reload); root and group notebook may connect.",
        ),
    ],
};

const NBCTL_EXAMPLES: Extra = Extra {
    title: "EXAMPLES",
    intro: "",
    items: &[
        ("sudo nbctl passwd", "Set the login password."),
        (
            "printf '%s\\n' \"$PASSWORD\" | sudo nbctl passwd --stdin",
            "Set it from a script.",
        ),
        (
            "sudo nbctl cert generate --host nb.example.com --force",
            "Replace the certificate with a self-signed one for nb.example.com.",
        ),
        (
            "sudo nbctl cert install fullchain.pem privkey.pem",
            "Install a certificate from a CA, then reload.",
        ),
        (
            "sudo nbctl embed allow https://my.example.com",
            "Let https://my.example.com show the notebook in an iframe.",
        ),
        (
            "sudo nbctl config set server.listen 127.0.0.1:9999",
            "Listen on loopback only (behind nginx); needs systemctl restart notebook.",
        ),
        ("nbctl status", "Show the running daemon."),
    ],
};

const NBCTL_SEE_ALSO: Extra = Extra {
    title: "SEE ALSO",
    intro: "notebookd(8), notebook.toml(5), systemctl(1)",
    items: &[],
};

const VERB_SEE_ALSO: Extra = Extra {
    title: "SEE ALSO",
    intro: "nbctl(8), notebookd(8), notebook.toml(5)",
    items: &[],
};

const NOTEBOOKD_SIGNALS: Extra = Extra {
    title: "SIGNALS",
    intro: "",
    items: &[
        (
            "SIGHUP",
            "Re-read the config and the TLS files (systemctl reload notebook, nbctl reload). A config that does not validate is refused and the running one kept. A changed password or session secret ends every session. server.listen, the directories and limits.max_connections need a restart.",
        ),
        (
            "SIGTERM, SIGINT",
            "Stop accepting connections, let open requests finish (server.shutdown_timeout), stop Jupyter (it shuts its kernels down), then exit.",
        ),
    ],
};

const NOTEBOOKD_ENVIRONMENT: Extra = Extra {
    title: "ENVIRONMENT",
    intro: "",
    items: &[
        (
            "NOTEBOOK_CONFIG",
            "The config file, when --config is not given (default /etc/notebook/notebook.toml).",
        ),
        (
            "RUST_LOG",
            "Log filter, e.g. info (the default) or notebookd=debug.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM",
            "Set by systemd: readiness and watchdog notifications, logging to the journal.",
        ),
    ],
};

const NOTEBOOKD_EXIT_STATUS: Extra = Extra {
    title: "EXIT STATUS",
    intro: "",
    items: &[
        (
            "0",
            "Stopped cleanly, or --check-config found the config valid.",
        ),
        (
            "1",
            "The config, the TLS files or the Jupyter command are unusable, a listen address could not be bound, or --check-config found an error (the message names the file, line, column and key).",
        ),
        ("2", "Bad usage."),
    ],
};

const NOTEBOOKD_SEE_ALSO: Extra = Extra {
    title: "SEE ALSO",
    intro: "nbctl(8), notebook.toml(5), systemd.service(5), jupyter(1)",
    items: &[],
};

/// notebook.toml(5), from the comments of the shipped config.
fn config_page() -> Vec<u8> {
    let mut roff = Roff::new();
    let mut title = vec!["NOTEBOOK.TOML".to_string(), "5".to_string()];
    title.push(date().unwrap_or_default());
    title.push(format!("notebookd {}", crate::VERSION));
    title.push("File Formats".into());
    roff.control("TH", title.iter().map(String::as_str));
    roff.control("SH", ["NAME"]);
    roff.text([roman("notebook.toml - configuration of notebookd")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("/etc/notebook/notebook.toml")]);
    roff.control("SH", ["DESCRIPTION"]);

    let mut lines = SHIPPED_CONFIG.lines().peekable();
    // The header: prose, with indented example commands.
    let mut in_example = false;
    while let Some(line) = lines.next_if(|l| !l.starts_with('[')) {
        let text = line
            .strip_prefix('#')
            .map(|t| t.strip_prefix(' ').unwrap_or(t));
        match text {
            Some(t) if t.starts_with("  ") => {
                if !in_example {
                    roff.control("PP", [])
                        .control("RS", ["4"])
                        .control("nf", []);
                    in_example = true;
                }
                roff.text([roman(t.trim())]);
            }
            Some(t) if !t.trim().is_empty() => {
                if in_example {
                    roff.control("fi", []).control("RE", []);
                    in_example = false;
                }
                roff.text([roman(t)]);
            }
            _ => {
                if in_example {
                    roff.control("fi", []).control("RE", []);
                    in_example = false;
                }
                roff.control("PP", []);
            }
        }
    }
    roff.control("SH", ["SETTINGS"]);
    roff.text([roman(
        "Each setting below is shown with its default value. nbctl config set KEY VALUE changes one (KEY is section.name, e.g. server.listen).",
    )]);
    // Sections: comment paragraphs followed by their `#key = default` lines.
    let mut prose: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let flush = |roff: &mut Roff, prose: &mut Vec<String>, keys: &mut Vec<String>| {
        if keys.is_empty() {
            return;
        }
        for (i, key) in keys.iter().enumerate() {
            roff.control(if i == 0 { "TP" } else { "TQ" }, []);
            roff.text([bold(key.clone())]);
        }
        roff.text([roman(prose.join(" "))]);
        prose.clear();
        keys.clear();
    };
    for line in lines {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush(&mut roff, &mut prose, &mut keys);
            prose.clear();
            roff.control("SS", [format!("[{section}]").as_str()]);
            continue;
        }
        match line.strip_prefix('#') {
            Some(setting)
                if setting.starts_with(|c: char| c.is_ascii_lowercase())
                    && setting.contains(" = ") =>
            {
                keys.push(setting.to_string());
            }
            Some(text) if !text.trim().is_empty() => {
                flush(&mut roff, &mut prose, &mut keys);
                prose.push(text.trim().to_string());
            }
            _ => flush(&mut roff, &mut prose, &mut keys),
        }
    }
    flush(&mut roff, &mut prose, &mut keys);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        roman("notebookd(8), nbctl(8); the shipped file with every key: "),
        italic("/usr/share/doc/notebookd/examples/notebook.toml"),
        roman(" if installed."),
    ]);
    roff.render().into_bytes()
}

/// Writes every man page and completion file under `dir`; returns their paths.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut written = Vec::new();
    let man8 = dir.join("man/man8");

    let mut notebookd = NotebookdArgs::command();
    notebookd.build();
    let extras = [
        NOTEBOOKD_SIGNALS,
        NOTEBOOKD_ENVIRONMENT,
        FILES,
        NOTEBOOKD_EXIT_STATUS,
        NOTEBOOKD_SEE_ALSO,
    ];
    write(
        &man8.join("notebookd.8"),
        &page(notebookd.clone(), "8", &extras)?,
        &mut written,
    )?;

    let mut nbctl = NbctlArgs::command().disable_help_subcommand(true);
    nbctl.build();
    let extras = [
        EXIT_STATUS,
        NBCTL_ENVIRONMENT,
        FILES,
        NBCTL_EXAMPLES,
        NBCTL_SEE_ALSO,
    ];
    write(
        &man8.join("nbctl.8"),
        &page(nbctl.clone(), "8", &extras)?,
        &mut written,
    )?;
    let mut stack: Vec<Command> = nbctl.get_subcommands().cloned().collect();
    while let Some(cmd) = stack.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        stack.extend(cmd.get_subcommands().cloned());
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_string();
        write(
            &man8.join(format!("{name}.8")),
            &page(cmd, "8", &[EXIT_STATUS, VERB_SEE_ALSO])?,
            &mut written,
        )?;
    }
    write(
        &dir.join("man/man5/notebook.toml.5"),
        &config_page(),
        &mut written,
    )?;

    for (cmd, name) in [(&mut nbctl, "nbctl"), (&mut notebookd, "notebookd")] {
        for (shell, file) in [
            (Shell::Bash, name.to_string()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, cmd, name, &mut out);
            let path = dir.join("completions").join(shell.to_string()).join(file);
            write(&path, &out, &mut written)?;
        }
    }
    Ok(written)
}
