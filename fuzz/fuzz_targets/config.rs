//! `Config::parse`: any text gives a config or an error that names the file
//! and a line inside the text; a config accepted once is accepted again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use notebookd::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/notebook/notebook.toml");
    match Config::parse(path, text) {
        Ok(config) => {
            assert!(config.validate().is_ok(), "a parsed config validates again");
            assert!(
                Config::parse(path, text).is_ok(),
                "parsing is deterministic"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("/etc/notebook/notebook.toml"),
                "the error names the file: {message}"
            );
            if let ConfigError::Invalid {
                location: Some((line, column)),
                ..
            } = &e
            {
                let lines = text.split('\n').count();
                assert!(
                    (1..=lines).contains(line) && *column >= 1,
                    "{line}:{column} is outside a text of {lines} lines"
                );
            }
            // Values are quoted in errors, escaped at most tenfold (`\u{10ffff}`).
            assert!(
                message.len() <= 4096 + 10 * text.len(),
                "an error of {} bytes for {} bytes of text",
                message.len(),
                text.len()
            );
        }
    }
});
