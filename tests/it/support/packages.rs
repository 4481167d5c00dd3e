//! The .deb and .rpm, built once per test run with `./dev package` (the
//! documented command): revision 1, and the same build as revision 2 to
//! try upgrades with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use super::repo_root;

pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    /// The same build with a higher package revision.
    pub deb_next: PathBuf,
    pub rpm_next: PathBuf,
}

/// The package version of revision `revision`, e.g. "0.1.0-2".
pub fn version(revision: u32) -> String {
    format!("{}-{revision}", env!("CARGO_PKG_VERSION"))
}

fn build(out: &Path, revision: u32) -> (PathBuf, PathBuf) {
    let started = Instant::now();
    let output = Command::new(repo_root().join("dev"))
        .arg("package")
        .env("PACKAGE_OUT", out)
        .env("PACKAGE_REVISION", revision.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run ./dev package");
    assert!(
        output.status.success(),
        "./dev package (revision {revision}) failed"
    );
    let listed: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let find = |ext: &str| {
        listed
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("./dev package printed no .{ext}: {listed:?}"))
            .clone()
    };
    eprintln!(
        "./dev package (revision {revision}) took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (find("deb"), find("rpm"))
}

/// Builds both revisions once (the first call takes a release build).
pub fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packages");
        let _ = std::fs::remove_dir_all(&out);
        let (deb, rpm) = build(&out, 1);
        let (deb_next, rpm_next) = build(&out, 2);
        Packages {
            deb,
            rpm,
            deb_next,
            rpm_next,
        }
    })
}
