//! The shipped config file and `notebookd --check-config`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use notebookd::config::Config;

use crate::support::repo_root;

fn shipped() -> String {
    std::fs::read_to_string(repo_root().join("etc/notebook.toml")).expect("etc/notebook.toml")
}

/// Dotted keys of every leaf value in a TOML table.
fn leaf_keys(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) if !prefix.ends_with(".env") => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn shipped_config_loads_as_the_defaults() {
    let config = Config::parse(Path::new("etc/notebook.toml"), &shipped()).expect("shipped config");
    assert_eq!(config, Config::default());
}

/// Every `#key = value` line, uncommented, gives exactly the defaults, and
/// every key of the schema is documented that way.
#[test]
fn shipped_config_documents_every_key_with_its_default() {
    let text = shipped();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ") =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let config =
        Config::parse(Path::new("uncommented"), &uncommented).expect("uncommented shipped config");
    assert_eq!(
        config,
        Config::default(),
        "a documented default differs from the real one"
    );

    let mut documented = BTreeSet::new();
    leaf_keys(
        "",
        &toml::from_str::<toml::Value>(&uncommented).unwrap(),
        &mut documented,
    );
    let mut schema = BTreeSet::new();
    leaf_keys(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut schema,
    );
    // Keys whose default is "unset" do not serialize; they must still be documented.
    schema.insert("auth.password_hash".into());
    assert_eq!(documented, schema, "documented keys differ from the schema");
}

fn check_config(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_notebookd"))
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run notebookd --check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_names_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notebook.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:9999\"\nlisen = \"x\"\n",
    )
    .unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 1, "{text}");
    let want = format!(
        "{}:3:1: server.lisen: unknown field `lisen`",
        path.display()
    );
    assert!(text.contains(&want), "{text}");

    std::fs::write(&path, "[server]\nlisten = \"localhost\"\n").unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(":2:10: server.listen:") && text.contains("e.g. \"0.0.0.0:9999\""),
        "{text}"
    );

    std::fs::write(&path, "[auth]\npassword_hash = \"sha1::\"\n").unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(":2:17: auth.password_hash:") && text.contains("nbctl passwd"),
        "{text}"
    );
}

#[test]
fn check_config_checks_tls_files_and_jupyter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notebook.toml");
    let certs = crate::support::certs();
    let good = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[jupyter]\ncommand = \"{}\"\n",
        certs.cert().display(),
        certs.key().display(),
        crate::support::jupyter_command()
    );
    std::fs::write(&path, &good).unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("configuration OK"), "{text}");

    std::fs::write(&path, good.replace("key.pem", "missing.pem")).unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("missing.pem") && text.contains("nbctl cert"),
        "{text}"
    );

    std::fs::write(
        &path,
        good.replace(&crate::support::jupyter_command(), "/nonexistent/jupyter"),
    )
    .unwrap();
    let (code, text) = check_config(&path);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("jupyter.command") && text.contains("python3-notebook"),
        "{text}"
    );

    let (code, text) = check_config(&dir.path().join("absent.toml"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("cannot read") && text.contains("--config"),
        "{text}"
    );
}
