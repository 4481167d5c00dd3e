//! What a notebook user finds in the Jupyter child's environment.

use crate::support::{Notebookd, Options, rustls_client, venv};

/// With `jupyter.command` in a venv, that venv's `bin` comes first on PATH:
/// `python` and `pip` in a terminal or a `!pip` cell are the kernel's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_venv_of_jupyter_comes_first_on_path() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let run = b
        .run_in_new_kernel(
            "import os, shutil; print(os.environ['PATH'].split(':')[0]); print(shutil.which('pip'))",
            rustls_client(),
        )
        .await;
    // The generated Jupyter config points at the config in use.
    let generated =
        std::fs::read_to_string(n.runtime_dir().join("jupyter/jupyter_notebookd_config.py"))
            .expect("the generated Jupyter config");
    assert!(
        generated.contains(&format!(
            "Configure notebookd instead: {} ",
            n.config_path().display()
        )),
        "{generated}"
    );
    let bin = venv().join("bin");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(bin.to_str().unwrap()),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(bin.join("pip").to_str().unwrap()),
        "{}",
        run.stdout
    );
}

/// The tutorials' stack imports in a kernel of the pinned venv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_stack_imports() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let run = b
        .run_in_new_kernel(
            "import numpy, scipy.stats, pandas, matplotlib\nprint(round(float(scipy.stats.norm.cdf(0)), 2), len(pandas.DataFrame({'a': numpy.arange(3)})))",
            rustls_client(),
        )
        .await;
    assert_eq!(run.stdout.trim(), "0.5 3", "{run:?}");
}

/// JupyterLab does not ask every new user about Jupyter news (nor fetch
/// the feed): its page config says the news are disabled and the plugin
/// that asks is off. (Chromium checks the popup itself, in browser.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_news_are_off() {
    let n = Notebookd::start_with(Options {
        settings: vec![("jupyter", "flavour = \"lab\"".into())],
        ..Options::default()
    });
    let b = n.logged_in().await;
    let page = b.get_page("lab").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let compact: String = html.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.contains("\"news\":{\"disabled\":true}"),
        "no disabled news in the page config:\n{html}"
    );
    let config = html
        .split_once("id=\"jupyter-config-data\"")
        .and_then(|(_, rest)| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| serde_json::from_str::<serde_json::Value>(json).unwrap())
        .expect("the page config");
    let disabled = config["disabledExtensions"].as_array().unwrap();
    assert!(
        disabled.contains(&"@jupyterlab/apputils-extension:announcements".into()),
        "the news plugin is not disabled: {disabled:?}"
    );
}

/// notebookd reads the installed Jupyter packages' versions from their
/// metadata itself (Python is only asked for `sys.path`): for every
/// distribution Python's `importlib.metadata` finds, in the pinned venv and
/// in Debian's own Python (`.dist-info` and `.egg-info`), it finds the same
/// version.
#[test]
fn package_versions_match_importlib_metadata() {
    const SCRIPT: &str = r#"
import importlib.metadata as m, sys
for d in sys.path:
    print("path", d, sep="\t")
names = sorted({d.metadata["Name"] for d in m.distributions() if d.metadata["Name"]})
for n in names:
    print("dist", n, m.version(n), sep="\t")
"#;
    for python in [venv().join("bin/python3"), "/usr/bin/python3".into()] {
        let out = std::process::Command::new(&python)
            .args(["-c", SCRIPT])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut path = Vec::new();
        let mut expected = std::collections::BTreeMap::new();
        for line in text.lines() {
            match line.split('\t').collect::<Vec<_>>()[..] {
                ["path", d] if !d.is_empty() => path.push(std::path::PathBuf::from(d)),
                ["dist", name, version] => {
                    expected.insert(name.to_owned(), version.to_owned());
                }
                _ => {}
            }
        }
        let names: Vec<&str> = expected.keys().map(String::as_str).collect();
        let found = notebookd::jupyter::flavour::versions_on_path(&path, &names);
        assert_eq!(found.0, expected, "{}", python.display());
        if python.starts_with(venv()) {
            assert!(
                expected.len() > 50,
                "{} packages in the venv",
                expected.len()
            );
            for p in ["notebook", "jupyter_server", "jupyter_core"] {
                assert!(found.version(p).is_some(), "{p} in {expected:?}");
            }
        }
    }
}
