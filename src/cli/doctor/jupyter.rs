//! The Jupyter command as the daemon runs it: its version and kernelspecs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Check, Verdict, check};
use crate::config::Config;
use crate::jupyter::LaunchPlan;

/// How long `jupyter --version` and `jupyter kernelspec list` may take
/// (a cold Python start on a slow disk takes seconds, not this).
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a bounded run printed.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program args` with the daemon's environment for Jupyter, killing it
/// after `TIMEOUT`. Output beyond 1 MiB per stream is dropped.
fn run_bounded(plan: &LaunchPlan, args: &[&str]) -> Result<Ran, String> {
    let shown = format!("`{} {}`", plan.command, args.join(" "));
    let mut cmd = Command::new(&plan.command);
    cmd.args(args)
        .envs(&plan.env)
        .envs(crate::jupyter::venv_first_on_path(plan).map(|p| ("PATH", p)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    // Readers on threads: a child that fills a pipe must not stall the wait.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(1 << 20).read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {}s",
                    TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {shown}: {e}")),
        }
    };
    Ok(Ran {
        success: status.success(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// The line of `jupyter --version` that names the server that serves
/// notebooks, else the first line.
fn version_summary(text: &str) -> String {
    let picked: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["notebook", "jupyterlab", "jupyter_server", "jupyter_core"]
                .iter()
                .any(|p| l.starts_with(p) && l[p.len()..].trim_start().starts_with(':'))
        })
        .collect();
    if picked.is_empty() {
        first_line(text).to_string()
    } else {
        picked
            .join(", ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The kernel names of `jupyter kernelspec list --json`.
pub fn kernel_names(json: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON ({e})"))?;
    let specs = v
        .get("kernelspecs")
        .and_then(|k| k.as_object())
        .ok_or("no \"kernelspecs\" object")?;
    let mut names: Vec<String> = specs.keys().cloned().collect();
    names.sort();
    Ok(names)
}

/// `jupyter --version` and `jupyter kernelspec list --json`, run as the
/// daemon runs Jupyter (jupyter.command, jupyter.env, a venv's bin first).
pub fn checks(config: &Config, out: &mut Vec<Check>) {
    if config.jupyter.gateway().is_some() {
        // Kernels run on the gateway: its kernelspecs are not this machine's.
        return;
    }
    let plan = LaunchPlan::from_config(config);
    match run_bounded(&plan, &["--version"]) {
        Ok(r) if r.success && !r.stdout.trim().is_empty() => out.push(check(
            "jupyter version",
            Verdict::Ok,
            version_summary(&r.stdout),
            None,
        )),
        Ok(r) => {
            out.push(check(
                "jupyter version",
                Verdict::Fail,
                format!(
                    "`{} --version` failed: {}",
                    plan.command,
                    first_line(&r.stderr)
                ),
                Some("reinstall Jupyter in that environment (`pip install notebook` in the venv, or Debian's python3-notebook)".into()),
            ));
            return;
        }
        Err(e) => {
            out.push(check(
                "jupyter version",
                Verdict::Fail,
                e,
                Some("install Debian's python3-notebook, or set jupyter.command to the jupyter of a venv".into()),
            ));
            return;
        }
    }
    let no_kernel_fix = || {
        let venv = crate::jupyter::venv_first_on_path(&plan).is_some()
            || std::path::Path::new(&plan.command)
                .parent()
                .and_then(|b| b.parent())
                .is_some_and(|v| v.join("pyvenv.cfg").exists());
        if venv {
            let python = std::path::Path::new(&plan.command).with_file_name("python3");
            format!(
                "install a kernel in that venv: `{} -m pip install ipykernel && {} -m ipykernel install --sys-prefix`",
                python.display(),
                python.display()
            )
        } else {
            "`sudo apt-get install python3-ipykernel` (Debian, Ubuntu), or `python3 -m ipykernel install --sys-prefix` in the Python that runs Jupyter".into()
        }
    };
    match run_bounded(&plan, &["kernelspec", "list", "--json"]) {
        Ok(r) if r.success => match kernel_names(&r.stdout) {
            Ok(names) if names.is_empty() => out.push(check(
                "jupyter kernels",
                Verdict::Fail,
                "Jupyter finds no kernelspec: notebooks open but no cell can run".into(),
                Some(no_kernel_fix()),
            )),
            Ok(names) => out.push(check(
                "jupyter kernels",
                Verdict::Ok,
                names.join(", "),
                None,
            )),
            Err(e) => out.push(check(
                "jupyter kernels",
                Verdict::Fail,
                format!(
                    "`{} kernelspec list --json` printed no kernel list: {e}",
                    plan.command
                ),
                Some(no_kernel_fix()),
            )),
        },
        Ok(r) => out.push(check(
            "jupyter kernels",
            Verdict::Fail,
            format!(
                "`{} kernelspec list --json` failed: {}",
                plan.command,
                first_line(&r.stderr)
            ),
            Some(no_kernel_fix()),
        )),
        Err(e) => out.push(check(
            "jupyter kernels",
            Verdict::Fail,
            e,
            Some(no_kernel_fix()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_summary_names_the_packages() {
        let text = "Selected Jupyter core packages...\nIPython          : 8.20.0\nipykernel        : 6.29.0\njupyter_core     : 5.7.1\njupyter_server   : 2.12.5\njupyterlab       : 4.1.0\nnotebook         : 7.1.0\n";
        assert_eq!(
            version_summary(text),
            "jupyter_core : 5.7.1, jupyter_server : 2.12.5, jupyterlab : 4.1.0, notebook : 7.1.0"
        );
        assert_eq!(version_summary("6.4.12\n"), "6.4.12");
    }

    #[test]
    fn kernel_names_from_the_json() {
        assert_eq!(
            kernel_names(r#"{"kernelspecs": {"python3": {}, "ir": {}}}"#).unwrap(),
            ["ir", "python3"]
        );
        assert!(kernel_names(r#"{"kernelspecs": {}}"#).unwrap().is_empty());
        assert!(kernel_names("nope").is_err());
    }
}
