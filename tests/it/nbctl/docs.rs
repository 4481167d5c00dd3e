//! The man pages and completions `nbctl generate-docs` (`./dev docs DIR`) writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use notebookd::cli::args::NbctlArgs;
use notebookd::config::Config;

use super::NBCTL;
use crate::support::missing_tool;

fn verbs(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{prefix}-{}", sub.get_name());
        out.insert(name.clone());
        verbs(sub, &name, out);
    }
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn man_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(NBCTL)
        .arg("generate-docs")
        .arg(dir.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);

    let mut pages = BTreeSet::new();
    verbs(&NbctlArgs::command(), "nbctl", &mut pages);
    assert!(
        pages.contains("nbctl-cert-generate") && pages.contains("nbctl-passwd"),
        "{pages:?}"
    );
    pages.insert("nbctl".into());
    pages.insert("notebookd".into());
    for page in &pages {
        let rel = format!("man/man8/{page}.8");
        let text = read(dir.path(), &rel);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{rel}");
        assert!(
            text.contains("2023-11-14"),
            "{rel}: no SOURCE_DATE_EPOCH date"
        );
        assert!(listed.contains(&rel), "{rel} not listed");
    }
    let nbctl = read(dir.path(), "man/man8/nbctl.8");
    for needle in [
        "EXIT STATUS",
        "NOTEBOOK_CONFIG",
        "nbctl\\-passwd(8)",
        "/run/notebook/control.sock",
        "EXAMPLES",
    ] {
        assert!(nbctl.contains(needle), "nbctl.8 lacks {needle}");
    }
    assert!(
        !nbctl.contains("generate\\-docs"),
        "the hidden verb is documented"
    );
    let daemon = read(dir.path(), "man/man8/notebookd.8");
    for needle in ["\\-\\-check\\-config", "SIGHUP", "SIGTERM"] {
        assert!(daemon.contains(needle), "notebookd.8 lacks {needle}");
    }

    // notebook.toml(5) documents every key of the schema.
    let config_page = read(dir.path(), "man/man5/notebook.toml.5");
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &defaults {
        assert!(
            config_page.contains(&format!("[{section}]")),
            "no [{section}]"
        );
        for (key, value) in keys.as_table().unwrap() {
            // A table inside a section ([tls.acme]) is a section of its own.
            // (A map such as jupyter.env is one key, `env = {}`.)
            let heading = format!("[{section}.{key}]");
            if let Some(sub) = value.as_table().filter(|_| config_page.contains(&heading)) {
                for subkey in sub.keys() {
                    assert!(
                        config_page.contains(&format!("\\fB{subkey} = ")),
                        "notebook.toml.5 lacks {section}.{key}.{subkey}"
                    );
                }
                continue;
            }
            assert!(
                config_page.contains(&format!("\\fB{key} = ")),
                "notebook.toml.5 lacks {section}.{key}"
            );
        }
    }
    assert!(config_page.contains("\\fBpassword_hash = "));

    // groff finds nothing to warn about.
    let mut groff = Command::new("groff");
    groff.args(["-man", "-Tutf8", "-ww", "-z"]);
    for page in &pages {
        groff.arg(dir.path().join(format!("man/man8/{page}.8")));
    }
    groff.arg(dir.path().join("man/man5/notebook.toml.5"));
    match groff.output() {
        Ok(o) => {
            let warnings = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() && warnings.trim().is_empty(),
                "groff: {warnings}"
            );
        }
        Err(_) => missing_tool("groff", "apt-get install groff-base"),
    }

    // Completions for both binaries and three shells.
    for (rel, needles) in [
        (
            "completions/bash/nbctl",
            &["passwd", "generate", "--key-type"][..],
        ),
        (
            "completions/zsh/_nbctl",
            &["passwd", "generate", "--key-type"][..],
        ),
        (
            "completions/fish/nbctl.fish",
            &["passwd", "generate", "key-type"][..],
        ),
        ("completions/bash/notebookd", &["--check-config"][..]),
        ("completions/zsh/_notebookd", &["--check-config"][..]),
        ("completions/fish/notebookd.fish", &["check-config"][..]),
    ] {
        let text = read(dir.path(), rel);
        for n in needles {
            assert!(text.contains(n), "{rel} lacks {n}");
        }
        assert!(
            !text.contains("generate-docs"),
            "{rel} offers the hidden verb"
        );
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("completions/bash/nbctl"))
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
}
