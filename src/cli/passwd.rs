//! `nbctl passwd`: the login password, hashed the way Jupyter hashes it.

use std::io::Read;
use std::path::Path;

use super::CliError;
use super::args::PasswdArgs;
use super::edit::{ConfigFile, Schema};
use crate::auth::password::PasswordHash;

/// More than any password anyone types; bounds what `--stdin` reads.
const MAX_INPUT: u64 = 64 * 1024;

const KEY: &str = "auth.password_hash";

pub fn run(config_path: &Path, args: &PasswdArgs) -> Result<(), CliError> {
    // Open the config before asking for anything: a wrong path fails now.
    let file = if args.print {
        None
    } else {
        Some(ConfigFile::open(config_path)?)
    };
    let password = if args.stdin {
        from_stdin()?
    } else {
        from_terminal()?
    };
    if password.is_empty() && !args.allow_empty {
        return Err(CliError::Failed(
            "empty password refused; nothing changed (pass --allow-empty if you really want anyone to log in with an empty password)".into(),
        ));
    }
    if !(password.is_empty() || args.allow_weak) {
        if let Some(why) = crate::auth::password::weakness(&password) {
            return Err(CliError::Failed(format!(
                "weak password refused: {why}; nothing changed (choose a longer, uncommon one, e.g. four random words, or pass --allow-weak)"
            )));
        }
    }
    let hash = PasswordHash::generate(&password)
        .map_err(|e| CliError::Failed(format!("cannot hash the password: {e}")))?;
    let Some(file) = file else {
        return super::emit(hash.as_str());
    };
    let key = Schema::new()?.resolve(KEY)?;
    let super::edit::Key::Setting { path, .. } = &key else {
        return Err(CliError::Failed(format!("{KEY} is not a setting")));
    };
    let text = file
        .edited(path, Some(&toml_edit::Value::from(hash.as_str())))?
        .unwrap_or_else(|| file.text().to_string());
    let config = file.save(&text, KEY)?;
    say!(
        "password set in {} ({KEY}); changing it ends every login session",
        file.path.display()
    );
    super::daemon::after_change(&config, "the new password", args.reload)
}

/// One line, or two equal lines (password and confirmation).
fn from_stdin() -> Result<String, CliError> {
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut raw)
        .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?;
    let text = String::from_utf8(raw)
        .map_err(|_| CliError::Failed("the password on standard input is not UTF-8 text".into()))?;
    if text.is_empty() {
        return Err(CliError::Failed(
            "no password on standard input; nothing changed (e.g. `printf '%s\\n' \"$PASSWORD\" | sudo nbctl passwd --stdin`)".into(),
        ));
    }
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l))
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    match lines.as_slice() {
        [password] => Ok((*password).to_string()),
        [password, confirm] if password == confirm => Ok((*password).to_string()),
        [_, _] => Err(CliError::Failed(
            "the passwords do not match (the second line of standard input must repeat the first); nothing changed".into(),
        )),
        _ => Err(CliError::Failed(format!(
            "standard input has {} lines; give one line (the password), or two (the password twice); nothing changed",
            lines.len()
        ))),
    }
}

/// Asks twice on the terminal, without echo.
fn from_terminal() -> Result<String, CliError> {
    let no_tty = |e: std::io::Error| {
        CliError::Usage(format!(
            "cannot ask for a password: no terminal ({e}); pipe it in with --stdin instead, e.g. `printf '%s\\n' \"$PASSWORD\" | sudo nbctl passwd --stdin`"
        ))
    };
    let first = rpassword::prompt_password("New password: ").map_err(no_tty)?;
    let second = rpassword::prompt_password("Retype new password: ").map_err(no_tty)?;
    if first != second {
        return Err(CliError::Failed(
            "the passwords do not match; nothing changed".into(),
        ));
    }
    Ok(first)
}
