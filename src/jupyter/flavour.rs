//! Which Jupyter is installed, and the config file notebookd writes for it.
//!
//! `jupyter --version` lists the installed Jupyter packages; from it we pick
//! the application (`jupyter notebook`, `lab` or `server`) and its config
//! dialect: `NotebookApp` for the classic Notebook 6.x (Debian bookworm's
//! `python3-notebook`), `ServerApp` for everything built on jupyter_server
//! (1.x names its token `ServerApp.token`, 2.x `IdentityProvider.token`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Flavour;

/// Installed Jupyter package versions, by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed(pub BTreeMap<String, String>);

impl Installed {
    /// Parses the output of `jupyter --version`.
    pub fn parse(output: &str) -> Installed {
        let mut map = BTreeMap::new();
        for line in output.lines() {
            if let Some((name, version)) = line.split_once(':') {
                let (name, version) = (name.trim(), version.trim());
                let plausible = !name.is_empty()
                    && !name.contains(' ')
                    && version.chars().next().is_some_and(|c| c.is_ascii_digit());
                if plausible {
                    map.insert(name.to_string(), version.to_string());
                }
            }
        }
        Installed(map)
    }

    pub fn version(&self, package: &str) -> Option<&str> {
        self.0.get(package).map(String::as_str)
    }

    fn major(&self, package: &str) -> Option<u32> {
        self.version(package)?.split('.').next()?.parse().ok()
    }
}

/// The config dialect of the Jupyter application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Classic Notebook 6.x: `c.NotebookApp.*`.
    NotebookApp,
    /// jupyter_server 1.x: `c.ServerApp.*`, token on ServerApp.
    ServerApp1,
    /// jupyter_server 2.x and later: `c.ServerApp.*`, token on IdentityProvider.
    ServerApp2,
}

/// What will be started: the subcommand and how to configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `notebook`, `lab` or `server`, as in `jupyter notebook`.
    pub subcommand: &'static str,
    pub dialect: Dialect,
    /// The package that provides the application, and its version (for status).
    pub package: &'static str,
    pub version: String,
}

impl Resolved {
    /// e.g. "notebook 7.2.2 (ServerApp)".
    pub fn describe(&self) -> String {
        let app = match self.dialect {
            Dialect::NotebookApp => "classic NotebookApp",
            Dialect::ServerApp1 | Dialect::ServerApp2 => "jupyter_server",
        };
        format!("{} {} ({app})", self.package, self.version)
    }
}

/// Chooses the application for `flavour` among the installed packages.
pub fn resolve(flavour: Flavour, installed: &Installed) -> Result<Resolved, String> {
    let server_dialect = || match installed.major("jupyter_server") {
        Some(1) => Dialect::ServerApp1,
        _ => Dialect::ServerApp2,
    };
    let pick = |package: &'static str| -> Option<Resolved> {
        let version = installed.version(package)?.to_string();
        let (subcommand, dialect) = match package {
            "notebook" if installed.major("notebook").is_some_and(|m| m < 7) => {
                ("notebook", Dialect::NotebookApp)
            }
            "notebook" => ("notebook", server_dialect()),
            "jupyterlab" => ("lab", server_dialect()),
            _ => ("server", server_dialect()),
        };
        Some(Resolved {
            subcommand,
            dialect,
            package,
            version,
        })
    };
    let missing = |what: &str| {
        format!(
            "{what} is not installed for this jupyter command (install Debian's python3-notebook, or `pip install notebook` in a venv and set jupyter.command to its bin/jupyter)"
        )
    };
    match flavour {
        Flavour::Notebook => pick("notebook").ok_or_else(|| missing("notebook")),
        Flavour::Lab => pick("jupyterlab").ok_or_else(|| missing("jupyterlab")),
        Flavour::Server => pick("jupyter_server").ok_or_else(|| missing("jupyter_server")),
        Flavour::Auto => pick("notebook")
            .or_else(|| pick("jupyterlab"))
            .or_else(|| pick("jupyter_server"))
            .ok_or_else(|| missing("no Jupyter server (notebook, jupyterlab or jupyter_server)")),
    }
}

/// Finds `name` as a shell would: an absolute path, or a search of `PATH`
/// (`path_override`, else the environment's).
pub fn find_program(name: &str, path_override: Option<&str>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = Path::new(name);
        return is_executable(p).then(|| p.to_owned());
    }
    let path = path_override
        .map(str::to_owned)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit, as a shell or `shutil.which` wants.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first `limit` bytes of the file at `path`.
fn read_head(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// The Python interpreter named by the launcher's `#!` line, if it is one.
fn launcher_python(command: &str, env: &BTreeMap<String, String>) -> Option<Vec<String>> {
    let path = find_program(command, env.get("PATH").map(String::as_str))?;
    script_python(&read_head(&path, SHEBANG_MAX)?)
}

/// The most of a `#!` line that Linux reads (BINPRM_BUF_SIZE).
const SHEBANG_MAX: u64 = 256;

/// The Python interpreter named by the `#!` line at the start of `head`.
fn script_python(head: &[u8]) -> Option<Vec<String>> {
    let head = &head[..head.len().min(SHEBANG_MAX as usize)];
    let first = std::str::from_utf8(head.split(|b| *b == b'\n').next()?).ok()?;
    let mut words: Vec<String> = first
        .strip_prefix("#!")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if words.first().is_some_and(|w| w.ends_with("/env")) {
        words.remove(0);
    }
    let interpreter = Path::new(words.first()?).file_name()?.to_str()?;
    interpreter.starts_with("python").then_some(words)
}

/// The program that `COMMAND SUBCOMMAND` would run, found as jupyter_core's
/// launcher finds it, when `command` is that launcher (a Python script
/// that runs `jupyter_core.command.main`, as pip, conda and Debian install
/// it): `jupyter-SUBCOMMAND` in the launcher's own directory, or first in
/// its target's if the launcher is a symlink. jupyter_core searches those
/// directories before PATH and then execs the program, changing nothing
/// else, so starting the program directly runs the same thing without a
/// Python start and jupyter_core's import first (60 ms here). `None`: run
/// the launcher, which searches PATH itself.
pub fn direct_subcommand(
    command: &str,
    env: &BTreeMap<String, String>,
    subcommand: &str,
) -> Option<PathBuf> {
    let launcher = find_program(command, env.get("PATH").map(String::as_str))?;
    // A relative launcher would be found from Jupyter's working directory.
    if !launcher.is_absolute() {
        return None;
    }
    let head = read_head(&launcher, 4096)?;
    if script_python(&head).is_none()
        || !String::from_utf8_lossy(&head).contains("from jupyter_core.command import main")
    {
        return None;
    }
    let real = std::fs::symlink_metadata(&launcher)
        .is_ok_and(|m| m.file_type().is_symlink())
        .then(|| std::fs::canonicalize(&launcher).ok())
        .flatten();
    let name = format!("jupyter-{subcommand}");
    real.iter()
        .chain(std::iter::once(&launcher))
        .filter_map(|l| l.parent())
        .map(|dir| dir.join(&name))
        .find(|p| is_executable(p))
}

/// The packages whose versions decide what is started.
const PACKAGES: [&str; 4] = ["notebook", "jupyterlab", "jupyter_server", "jupyter_core"];

/// Asks the launcher's Python where it looks for packages (`sys.path`, a
/// Python start without imports: about 16 ms here), then reads the
/// versions from the package metadata there as `importlib.metadata` would.
/// Asking `importlib.metadata` itself took 77 ms: it imports much of the
/// standard library. Also returns the directories looked in.
async fn detect_by_metadata(
    python: &[String],
    env: &BTreeMap<String, String>,
) -> Option<(Installed, Vec<PathBuf>)> {
    const SCRIPT: &str = "import sys\nfor d in sys.path: print(d)";
    let (program, args) = python.split_first()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg("-c")
        .arg(SCRIPT)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    let installed = versions_on_path(&path, &PACKAGES);
    // Not found (an egg, a custom finder): `jupyter --version` answers instead.
    installed
        .version("jupyter_core")
        .is_some()
        .then_some((installed, path))
}

/// The version of each of `packages` as Python 3's `importlib.metadata.version`
/// finds it: the first `NAME-*.dist-info` or `NAME-*.egg-info` along `path`
/// whose name matches once normalized (PEP 503, with `_`), its `Version`
/// read from `METADATA`, else `PKG-INFO`, else the `.egg-info` file itself.
/// Entries in one directory are taken in the order the directory lists
/// them, as Python does.
pub fn versions_on_path(path: &[PathBuf], packages: &[&str]) -> Installed {
    let mut found = BTreeMap::new();
    let mut missing: Vec<(String, &str)> = packages.iter().map(|p| (normalize(p), *p)).collect();
    for dir in path {
        if missing.is_empty() {
            break;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(low) = name.to_str().map(str::to_ascii_lowercase) else {
                continue;
            };
            let Some(stem) = low
                .strip_suffix(".dist-info")
                .or_else(|| low.strip_suffix(".egg-info"))
            else {
                continue;
            };
            let project = normalize(stem.split('-').next().unwrap_or(stem));
            let Some(i) = missing.iter().position(|(n, _)| *n == project) else {
                continue;
            };
            let (_, package) = missing.swap_remove(i);
            // The first match decides, as in Python, even one without a version.
            if let Some(version) = metadata_version(&entry.path()) {
                found.insert(package.to_owned(), version);
            }
        }
    }
    Installed(found)
}

/// A project name as `importlib.metadata` compares it: lower case, each run
/// of `-`, `_` and `.` one `_`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The `Version` header of a distribution's metadata (headers end at the
/// first empty line). At most 1 MiB is read.
fn metadata_version(info: &Path) -> Option<String> {
    let read = |p: &Path| -> Option<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(p)
            .ok()?
            .take(1 << 20)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    };
    let text = if info.is_dir() {
        read(&info.join("METADATA")).or_else(|| read(&info.join("PKG-INFO")))?
    } else {
        read(info)?
    };
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("version")
                .then(|| value.trim().to_owned())
        })
        .filter(|v| !v.is_empty())
}

/// The Jupyter packages installed for `command`: from Python's package
/// metadata when the launcher is a Python script, else from `COMMAND
/// --version`. Remembered in `DIR/jupyter-packages.json` for the next start
/// for as long as nothing it depends on changed: the command, its
/// environment, the launcher and its interpreter, and every directory
/// Python looked the packages up in (installing, upgrading or removing a
/// package adds or renames an entry there, which changes the directory's
/// modification time). A restart then spends no Python start on it.
pub async fn detect_cached(
    command: &str,
    env: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<Installed, String> {
    let file = dir.join(DETECTED_FILE);
    if let Some(known) = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Detected>(&b).ok())
    {
        if known.command == command && known.env == env_digest(env) && known.still_true() {
            return Ok(Installed(known.installed));
        }
    }
    let Some(python) = launcher_python(command, env) else {
        return detect_by_version(command, env).await;
    };
    let Some((installed, path)) = detect_by_metadata(&python, env).await else {
        return detect_by_version(command, env).await;
    };
    let mut depends_on: Vec<PathBuf> = Vec::new();
    if let Some(launcher) = find_program(command, env.get("PATH").map(String::as_str)) {
        depends_on.push(launcher);
    }
    if let Some(interpreter) = python
        .first()
        .and_then(|p| find_program(p, env.get("PATH").map(String::as_str)))
    {
        depends_on.push(interpreter);
    }
    depends_on.extend(path.into_iter().filter(|p| p.is_absolute()));
    let detected = Detected {
        command: command.to_owned(),
        env: env_digest(env),
        stamps: depends_on.into_iter().map(|p| (stamp(&p), p)).collect(),
        installed: installed.0.clone(),
    };
    // Best effort: without the file the next start asks Python again.
    if let Ok(bytes) = serde_json::to_vec(&detected) {
        if let Err(e) = crate::private_file::write(&file, &bytes) {
            tracing::debug!(
                "cannot remember the Jupyter packages in {}: {e}",
                file.display()
            );
        }
    }
    Ok(installed)
}

const DETECTED_FILE: &str = "jupyter-packages.json";

/// What [`detect_cached`] found, and what it depended on.
#[derive(serde::Serialize, serde::Deserialize)]
struct Detected {
    command: String,
    /// SHA-256 of `jupyter.env` (its values may be secrets: not stored).
    env: String,
    /// Each file or directory with its modification time (ns), `None` if missing.
    stamps: Vec<(Option<i128>, PathBuf)>,
    installed: BTreeMap<String, String>,
}

impl Detected {
    fn still_true(&self) -> bool {
        self.stamps.iter().all(|(was, p)| stamp(p) == *was)
    }
}

fn env_digest(env: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (k, v) in env {
        // Lengths first: no two maps give the same bytes.
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

fn stamp(path: &Path) -> Option<i128> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()))
}

async fn detect_by_version(
    command: &str,
    env: &BTreeMap<String, String>,
) -> Result<Installed, String> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.arg("--version")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| format!("`{command} --version` did not finish within 60s"))?
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (install Debian's python3-notebook, or set jupyter.command to the jupyter of a venv)"
            } else {
                ""
            };
            format!("cannot run `{command} --version`: {e}{hint}")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed = Installed::parse(&text);
    if !out.status.success() || installed.0.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{command} --version` failed ({}): {}",
            out.status,
            err.trim().lines().last().unwrap_or("no output")
        ));
    }
    Ok(installed)
}

/// The front-end code notebookd gives Jupyter:
/// - frame links: inside another site's iframe, notebooks and same-site
///   links open in the frame rather than in a new browser tab (another cookie
///   partition, where the user would have to log in again);
/// - Log Out: a menu entry (a header button in the classic UI) that opens
///   notebookd's `{base_url}logout`, since Jupyter's own shows only when
///   Jupyter does the login.
///
/// Notebook 7 and JupyterLab 4 get small federated JupyterLab extensions in
/// `DIR/labextensions`, loaded through `LabServerApp.extra_labextensions_path`;
/// the classic Notebook 6.x gets `custom/custom.js` in `DIR/config`, which
/// becomes `JUPYTER_CONFIG_DIR`.
pub mod frontend {
    pub const LABEXTENSIONS: &str = "labextensions";
    pub const CLASSIC_CONFIG_DIR: &str = "config";
    use crate::jupyter::flavour::Dialect;

    const FRAME_LINKS: Extension = Extension {
        name: "notebookd-frame-links",
        entry: include_str!("frontend/frame-links.js"),
        package: include_str!("frontend/frame-links.package.json"),
        schema: None,
    };
    const LOG_OUT: Extension = Extension {
        name: "notebookd-log-out",
        entry: include_str!("frontend/log-out.js"),
        package: include_str!("frontend/log-out.package.json"),
        schema: Some(include_str!("frontend/log-out.schema.json")),
    };
    const CLASSIC_CUSTOM_JS: &str = include_str!("frontend/custom.js");

    /// A federated JupyterLab extension written by hand (no build step).
    struct Extension {
        name: &'static str,
        entry: &'static str,
        package: &'static str,
        /// Its one plugin's settings schema (`schemas/NAME/plugin.json`).
        schema: Option<&'static str>,
    }

    impl Extension {
        fn files(&self) -> Vec<(String, String)> {
            // Jupyter serves extension files as immutable: a new content needs a new name.
            let entry = format!("static/remoteEntry.{:016x}.js", fnv1a(self.entry));
            let package = self.package.replace("static/remoteEntry.js", &entry);
            let dir = format!("{LABEXTENSIONS}/{}", self.name);
            let mut files = vec![
                (format!("{dir}/package.json"), package),
                (format!("{dir}/{entry}"), self.entry.to_string()),
            ];
            if let Some(schema) = self.schema {
                files.push((
                    format!("{dir}/schemas/{}/plugin.json", self.name),
                    schema.to_string(),
                ));
            }
            files
        }
    }

    /// JupyterLab's "get notified about official Jupyter news?" popup
    /// (shown whatever `LabApp.news_url` says).
    const NEWS_PLUGIN: &str = "@jupyterlab/apputils-extension:announcements";

    /// Whether Jupyter's arguments ask for JupyterLab's news feed.
    pub fn wants_news(args: &[String]) -> bool {
        args.iter().any(|a| a.starts_with("--LabApp.news_url"))
    }

    /// Files to write, as (path relative to the private Jupyter dir, content).
    /// `news`: keep JupyterLab's news popup (else an extension turns it off,
    /// through the `disabledExtensions` of its package.json).
    pub fn files(dialect: Dialect, news: bool) -> Vec<(String, String)> {
        match dialect {
            Dialect::NotebookApp => vec![(
                format!("{CLASSIC_CONFIG_DIR}/custom/custom.js"),
                CLASSIC_CUSTOM_JS.to_string(),
            )],
            Dialect::ServerApp1 | Dialect::ServerApp2 => {
                let mut files: Vec<(String, String)> = [FRAME_LINKS, LOG_OUT]
                    .iter()
                    .flat_map(Extension::files)
                    .collect();
                if !news {
                    let package = format!("{LABEXTENSIONS}/{}/package.json", LOG_OUT.name);
                    if let Some((_, text)) = files.iter_mut().find(|(p, _)| *p == package) {
                        *text = with_disabled(text, NEWS_PLUGIN);
                    }
                }
                files
            }
        }
    }

    /// `package` (an extension's package.json) also disabling `plugin`.
    fn with_disabled(package: &str, plugin: &str) -> String {
        let mut value: serde_json::Value = match serde_json::from_str(package) {
            Ok(v) => v,
            Err(_) => return package.to_string(),
        };
        if let Some(lab) = value.get_mut("jupyterlab").and_then(|v| v.as_object_mut()) {
            lab.insert("disabledExtensions".into(), serde_json::json!([plugin]));
        }
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| package.to_string())
    }

    fn fnv1a(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// What the Jupyter config file must say.
pub struct JupyterConfig<'a> {
    pub dialect: Dialect,
    /// The private directory of the config (and of [`frontend`]'s files).
    pub dir: &'a Path,
    pub socket: &'a Path,
    pub base_url: &'a str,
    pub root_dir: &'a Path,
    pub allow_root: bool,
    /// Kernels run on a gateway: load notebookd's gateway extension.
    pub gateway: bool,
    /// notebookd's config file, where the reader of this file should look.
    pub notebookd_config: &'a Path,
}

fn py_str(s: &str) -> String {
    // A JSON string literal is a valid Python string literal.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The Python config file for the Jupyter application.
pub fn render(cfg: &JupyterConfig) -> String {
    let app = match cfg.dialect {
        Dialect::NotebookApp => "NotebookApp",
        Dialect::ServerApp1 | Dialect::ServerApp2 => "ServerApp",
    };
    let mut out = format!(
        "# Written by notebookd at each start of Jupyter; changes here are lost.\n\
         # Configure notebookd instead: {} (`nbctl config`).\n\
         c = get_config()  # noqa: F821\n",
        cfg.notebookd_config.display()
    );
    let mut set = |key: &str, value: String| {
        let _ = writeln!(out, "c.{key} = {value}");
    };
    // Only notebookd can reach the socket: directory 0700, socket 0600.
    set(
        &format!("{app}.sock"),
        py_str(&cfg.socket.display().to_string()),
    );
    set(&format!("{app}.sock_mode"), py_str("0600"));
    set(&format!("{app}.base_url"), py_str(cfg.base_url));
    let root_key = match cfg.dialect {
        Dialect::NotebookApp => "notebook_dir",
        _ => "root_dir",
    };
    set(
        &format!("{app}.{root_key}"),
        py_str(&cfg.root_dir.display().to_string()),
    );
    set(&format!("{app}.open_browser"), "False".into());
    // notebookd checks who may connect; Jupyter sees the browser's Host header.
    set(&format!("{app}.allow_remote_access"), "True".into());
    // X-Forwarded-For / X-Forwarded-Proto come from notebookd, not from the client.
    set(&format!("{app}.trust_xheaders"), "True".into());
    // Stopping the server is the supervisor's business.
    set(&format!("{app}.quit_button"), "False".into());
    // notebookd owns authentication. XSRF and Origin checks stay on.
    set(&format!("{app}.disable_check_xsrf"), "False".into());
    match cfg.dialect {
        Dialect::NotebookApp | Dialect::ServerApp1 => {
            set(&format!("{app}.token"), py_str(""));
            set(&format!("{app}.password"), py_str(""));
        }
        Dialect::ServerApp2 => {
            set("IdentityProvider.token", py_str(""));
        }
    }
    if cfg.allow_root {
        set(&format!("{app}.allow_root"), "True".into());
    }
    if cfg.dialect != Dialect::NotebookApp {
        // Notebook 7 and JupyterLab load notebookd's frame-links extension from here.
        set(
            "LabServerApp.extra_labextensions_path",
            format!(
                "[{}]",
                py_str(&cfg.dir.join(frontend::LABEXTENSIONS).display().to_string())
            ),
        );
        // JupyterLab greets every new user with a "get notified about
        // official Jupyter news?" popup and then fetches a feed from the
        // internet. An admin who wants it back passes
        // `--LabApp.news_url=URL` in jupyter.args (arguments win over this
        // file, and then [`frontend::files`] leaves the popup's plugin on).
        set("LabApp.news_url", "None".into());
    }
    if cfg.gateway {
        render_gateway(&mut out, cfg);
    }
    out
}

/// Loads notebookd's gateway extension (TCP_NODELAY on the kernel
/// WebSockets to the gateway) from the private directory; the gateway's URL
/// and token come from the environment, so they are not in this file.
fn render_gateway(out: &mut String, cfg: &JupyterConfig) {
    use crate::jupyter::gateway::{EXTENSION, PYTHON_DIR};
    let python_dir = py_str(&cfg.dir.join(PYTHON_DIR).display().to_string());
    let key = match cfg.dialect {
        Dialect::NotebookApp => "NotebookApp.nbserver_extensions",
        Dialect::ServerApp1 | Dialect::ServerApp2 => "ServerApp.jpserver_extensions",
    };
    let _ = writeln!(
        out,
        "import sys\n\
         if {python_dir} not in sys.path:\n    sys.path.insert(0, {python_dir})\n\
         c.{key}.update({{{}: True}})",
        py_str(EXTENSION)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_package(dir: &Path, name: &str, version: &str) {
        let info = dir.join(format!("{name}-{version}.dist-info"));
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
        )
        .unwrap();
    }

    fn executable(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `jupyter notebook` becomes `jupyter-notebook` only where jupyter_core's
    /// launcher would pick that program before looking at PATH.
    #[test]
    fn subcommand_programs_are_found_as_jupyter_core_finds_them() {
        const LAUNCHER: &str = "#!/usr/bin/python3\nimport re\nimport sys\nfrom jupyter_core.command import main\nif __name__ == '__main__':\n    sys.exit(main())\n";
        let dir = tempfile::tempdir().unwrap();
        let (venv, other) = (dir.path().join("venv/bin"), dir.path().join("other"));
        executable(&venv.join("jupyter"), LAUNCHER);
        executable(&venv.join("jupyter-notebook"), "#!/usr/bin/python3\n");
        executable(&other.join("jupyter-lab"), "#!/usr/bin/python3\n");
        let env: BTreeMap<String, String> = [(
            "PATH".to_owned(),
            format!("{}:{}", other.display(), venv.display()),
        )]
        .into();
        let direct = |cmd: &str, sub: &str| direct_subcommand(cmd, &env, sub);

        assert_eq!(
            direct("jupyter", "notebook"),
            Some(venv.join("jupyter-notebook"))
        );
        let absolute = venv.join("jupyter").display().to_string();
        assert_eq!(
            direct(&absolute, "notebook"),
            Some(venv.join("jupyter-notebook"))
        );
        // Only on PATH, not beside the launcher: the launcher searches PATH.
        assert_eq!(direct("jupyter", "lab"), None);
        // Not executable: the launcher reports it.
        executable(&venv.join("jupyter-server"), "");
        std::fs::set_permissions(
            venv.join("jupyter-server"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(direct("jupyter", "server"), None);

        // A symlink to the launcher: its target's directory comes first.
        let linked = dir.path().join("links");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(venv.join("jupyter"), linked.join("jupyter")).unwrap();
        executable(&linked.join("jupyter-notebook"), "#!/usr/bin/python3\n");
        executable(&linked.join("jupyter-lab"), "#!/usr/bin/python3\n");
        let link = linked.join("jupyter").display().to_string();
        let real = std::fs::canonicalize(venv.join("jupyter-notebook")).unwrap();
        assert_eq!(direct(&link, "notebook"), Some(real));
        assert_eq!(direct(&link, "lab"), Some(linked.join("jupyter-lab")));

        // Anything else is run as it is: a wrapper script of any kind.
        let wrapper = dir.path().join("wrap/jupyter");
        executable(
            &wrapper,
            "#!/bin/sh\nexport X=1\nexec /venv/bin/jupyter \"$@\"\n",
        );
        executable(&dir.path().join("wrap/jupyter-notebook"), "#!/bin/sh\n");
        assert_eq!(direct(&wrapper.display().to_string(), "notebook"), None);
        let python_wrapper = dir.path().join("pywrap/jupyter");
        executable(
            &python_wrapper,
            "#!/usr/bin/python3\nimport os\nos.execv('/venv/bin/jupyter', ['jupyter'])\n",
        );
        executable(
            &dir.path().join("pywrap/jupyter-notebook"),
            "#!/usr/bin/python3\n",
        );
        assert_eq!(
            direct(&python_wrapper.display().to_string(), "notebook"),
            None
        );
    }

    /// The first match along the path decides; names compare normalized;
    /// `.egg-info` directories and files count; METADATA before PKG-INFO.
    #[test]
    fn versions_are_read_as_importlib_metadata_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        fake_package(&first, "jupyter_core", "5.7.2");
        fake_package(&second, "jupyter_core", "4.0.0");
        fake_package(&second, "Jupyter.Server", "2.14.2");
        // Debian's layout for the classic Notebook: an .egg-info directory.
        let egg = second.join("notebook-6.4.12.egg-info");
        std::fs::create_dir_all(&egg).unwrap();
        std::fs::write(
            egg.join("PKG-INFO"),
            "Metadata-Version: 2.1\nName: notebook\nVersion: 6.4.12\n\nVersion: 9\n",
        )
        .unwrap();
        // An .egg-info file, and a dist-info with both files.
        std::fs::write(
            second.join("jupyterlab-4.0.0.egg-info"),
            "Name: jupyterlab\nversion:  4.0.0 \n",
        )
        .unwrap();
        let both = first.join("ipykernel-6.29.5.dist-info");
        std::fs::create_dir_all(&both).unwrap();
        std::fs::write(both.join("METADATA"), "Name: ipykernel\nVersion: 6.29.5\n").unwrap();
        std::fs::write(both.join("PKG-INFO"), "Name: ipykernel\nVersion: 1.0\n").unwrap();
        // Found first but without a version: absent, as for Python.
        let bare = first.join("nbformat-5.dist-info");
        std::fs::create_dir_all(&bare).unwrap();
        fake_package(&second, "nbformat", "5.10.4");

        let path = [dir.path().join("missing"), first, second];
        let found = versions_on_path(
            &path,
            &[
                "jupyter_core",
                "jupyter-server",
                "notebook",
                "jupyterlab",
                "ipykernel",
                "nbformat",
                "absent",
            ],
        );
        let want: BTreeMap<String, String> = [
            ("jupyter_core", "5.7.2"),
            ("jupyter-server", "2.14.2"),
            ("notebook", "6.4.12"),
            ("jupyterlab", "4.0.0"),
            ("ipykernel", "6.29.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(found.0, want);
    }

    /// The packages are remembered until a directory they were looked up in
    /// changes (a package installed there), or the environment does.
    #[tokio::test]
    async fn detected_packages_are_remembered_until_something_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, pkgs, state) = (
            dir.path().join("bin"),
            dir.path().join("pkgs"),
            dir.path().join("state"),
        );
        for d in [&bin, &pkgs, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        let launcher = bin.join("jupyter");
        std::fs::write(&launcher, "#!/usr/bin/env python3\n").unwrap();
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake_package(&pkgs, "jupyter_core", "5.0.0");
        let mut env = BTreeMap::new();
        env.insert("PYTHONPATH".to_string(), pkgs.display().to_string());
        let command = launcher.display().to_string();
        let first = detect_cached(&command, &env, &state).await.unwrap();
        assert_eq!(first.version("jupyter_core"), Some("5.0.0"));
        assert_eq!(first.version("notebook"), None);
        let file = state.join(DETECTED_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The next start takes what was remembered: shown by editing it.
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("5.0.0", "5.0.1");
        std::fs::write(&file, text).unwrap();
        let again = detect_cached(&command, &env, &state).await.unwrap();
        assert_eq!(again.version("jupyter_core"), Some("5.0.1"), "remembered");
        // A package installed where Python looked: asked again.
        fake_package(&pkgs, "notebook", "7.0.0");
        let after = detect_cached(&command, &env, &state).await.unwrap();
        assert_eq!(after.version("jupyter_core"), Some("5.0.0"));
        assert_eq!(after.version("notebook"), Some("7.0.0"));
        // Another environment: asked again, and nothing of it is stored.
        env.insert(
            "SECRET_FOR_KERNELS".to_string(),
            "hunter2-value".to_string(),
        );
        std::fs::write(
            &file,
            std::fs::read_to_string(&file)
                .unwrap()
                .replace("7.0.0", "7.0.9"),
        )
        .unwrap();
        let other = detect_cached(&command, &env, &state).await.unwrap();
        assert_eq!(other.version("notebook"), Some("7.0.0"));
        assert!(!std::fs::read_to_string(&file).unwrap().contains("hunter2"));
    }

    const PIP: &str = "Selected Jupyter core packages...\nIPython          : 8.28.0\nipykernel        : 6.29.5\nipywidgets       : not installed\njupyter_client   : 8.6.3\njupyter_core     : 5.7.2\njupyter_server   : 2.14.2\njupyterlab       : 4.2.5\nnotebook         : 7.2.2\n";
    const DEBIAN: &str = "Selected Jupyter core packages...\nIPython          : 8.5.0\nipykernel        : 6.17.0\njupyter_client   : 7.4.9\njupyter_core     : 4.12.0\njupyter_server   : 1.23.3\nnbconvert        : 6.5.3\nnotebook         : 6.4.12\n";

    #[test]
    fn auto_prefers_notebook() {
        let r = resolve(Flavour::Auto, &Installed::parse(PIP)).unwrap();
        assert_eq!((r.subcommand, r.dialect), ("notebook", Dialect::ServerApp2));
        let r = resolve(Flavour::Auto, &Installed::parse(DEBIAN)).unwrap();
        assert_eq!(
            (r.subcommand, r.dialect),
            ("notebook", Dialect::NotebookApp)
        );
        let r = resolve(Flavour::Server, &Installed::parse(DEBIAN)).unwrap();
        assert_eq!((r.subcommand, r.dialect), ("server", Dialect::ServerApp1));
        assert!(resolve(Flavour::Lab, &Installed::parse(DEBIAN)).is_err());
        assert!(resolve(Flavour::Auto, &Installed::default()).is_err());
    }

    #[test]
    fn config_never_enables_tokens_or_skips_xsrf() {
        let text = render(&JupyterConfig {
            dialect: Dialect::ServerApp2,
            dir: Path::new("/run/notebook/jupyter"),
            socket: Path::new("/run/notebook/jupyter/jupyter.sock"),
            base_url: "/nb/",
            root_dir: Path::new("/var/lib/notebook/notebooks"),
            allow_root: false,
            gateway: false,
            notebookd_config: Path::new("/srv/nb/notebook.toml"),
        });
        assert!(
            text.contains(
                "# Configure notebookd instead: /srv/nb/notebook.toml (`nbctl config`).\n"
            )
        );
        assert!(text.contains("c.ServerApp.sock = \"/run/notebook/jupyter/jupyter.sock\"\n"));
        assert!(text.contains("c.ServerApp.disable_check_xsrf = False\n"));
        assert!(text.contains("c.IdentityProvider.token = \"\"\n"));
        assert!(text.contains("c.LabApp.news_url = None\n"));
        assert!(!text.contains("allow_root"));
        let classic = render(&JupyterConfig {
            dialect: Dialect::NotebookApp,
            dir: Path::new("/run/notebook/jupyter"),
            socket: Path::new("/s"),
            base_url: "/",
            root_dir: Path::new("/r\"x"),
            allow_root: true,
            gateway: false,
            notebookd_config: Path::new("/etc/notebook/notebook.toml"),
        });
        assert!(
            classic.contains("c.NotebookApp.notebook_dir = \"/r\\\"x\"\n"),
            "{classic}"
        );
        assert!(classic.contains("c.NotebookApp.allow_root = True\n"));
        assert!(text.contains(
            "c.LabServerApp.extra_labextensions_path = [\"/run/notebook/jupyter/labextensions\"]\n"
        ));
        assert!(!classic.contains("labextensions"));
    }

    #[test]
    fn gateway_mode_loads_the_extension_and_holds_no_secret() {
        for (dialect, key) in [
            (
                Dialect::ServerApp2,
                "c.ServerApp.jpserver_extensions.update(",
            ),
            (
                Dialect::NotebookApp,
                "c.NotebookApp.nbserver_extensions.update(",
            ),
        ] {
            let text = render(&JupyterConfig {
                dialect,
                dir: Path::new("/run/notebook/jupyter"),
                socket: Path::new("/run/notebook/jupyter/jupyter.sock"),
                base_url: "/",
                root_dir: Path::new("/var/lib/notebook/notebooks"),
                allow_root: false,
                gateway: true,
                notebookd_config: Path::new("/etc/notebook/notebook.toml"),
            });
            assert!(
                text.contains("sys.path.insert(0, \"/run/notebook/jupyter/python\")"),
                "{text}"
            );
            assert!(
                text.contains(&format!("{key}{{\"notebookd_gateway\": True}})")),
                "{text}"
            );
            // The URL and token travel in the environment, not in this file.
            assert!(!text.contains("Gateway"), "{text}");
        }
        let files = crate::jupyter::gateway::files();
        assert_eq!(files[0].0, "python/notebookd_gateway.py");
        assert!(files[0].1.contains("TCP_QUICKACK"));
    }

    #[test]
    fn frontend_files() {
        let lab = frontend::files(Dialect::ServerApp2, false);
        for (name, entry_marker) in [
            ("notebookd-frame-links", "window.open"),
            ("notebookd-log-out", "'logout'"),
        ] {
            let dir = format!("labextensions/{name}/");
            let package = lab
                .iter()
                .find(|(p, _)| *p == format!("{dir}package.json"))
                .unwrap_or_else(|| panic!("no package.json for {name}"));
            let package: serde_json::Value = serde_json::from_str(&package.1).unwrap();
            assert_eq!(package["name"], name);
            let load = package["jupyterlab"]["_build"]["load"].as_str().unwrap();
            assert!(
                load.starts_with("static/remoteEntry.") && load.ends_with(".js"),
                "{load}"
            );
            let entry = lab
                .iter()
                .find(|(p, _)| *p == format!("{dir}{load}"))
                .unwrap_or_else(|| {
                    panic!("{name}: package.json loads {load}, which is not written")
                });
            assert!(entry.1.contains(&format!("var NAME = '{name}'")));
            assert!(entry.1.contains(entry_marker));
        }
        // The Log Out entry is declared in the schema, for the command the plugin adds.
        let schema = lab
            .iter()
            .find(|(p, _)| {
                p == "labextensions/notebookd-log-out/schemas/notebookd-log-out/plugin.json"
            })
            .expect("log-out schema");
        let schema: serde_json::Value = serde_json::from_str(&schema.1).unwrap();
        let items = &schema["jupyter.lab.menus"]["main"][0]["items"];
        assert!(
            items
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["command"] == "notebookd:log-out")
        );
        // The news popup is off unless Jupyter's arguments ask for the feed.
        let disabled = |files: &[(String, String)]| {
            let (_, text) = files
                .iter()
                .find(|(p, _)| p == "labextensions/notebookd-log-out/package.json")
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            v["jupyterlab"]["disabledExtensions"].clone()
        };
        assert_eq!(
            disabled(&lab),
            serde_json::json!(["@jupyterlab/apputils-extension:announcements"])
        );
        let args = ["--LabApp.news_url=https://example.org/feed.xml".to_string()];
        assert!(frontend::wants_news(&args));
        assert!(disabled(&frontend::files(Dialect::ServerApp2, true)).is_null());
        let classic = frontend::files(Dialect::NotebookApp, false);
        assert_eq!(classic[0].0, "config/custom/custom.js");
        assert!(classic[0].1.contains("Jupyter._target = '_self'"));
        assert!(classic[0].1.contains("base + 'logout'"));
    }
}
