//! The .deb and the .rpm as built by `./dev package`: contents, modes,
//! owners, dependencies, maintainer scripts, lintian and rpmlint; and the
//! rpm's scriptlets run for real under systemd in a booted Debian.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::container::{self, Container};
use crate::support::packages::{self, packages};
use crate::support::{Browser, free_port, missing_tool, repo_root};

fn have(tool: &str, package: &str) -> bool {
    if notebookd::jupyter::flavour::find_program(tool, Some("/usr/sbin:/usr/bin:/sbin:/bin"))
        .is_some()
    {
        return true;
    }
    missing_tool(
        tool,
        &format!("apt-get install {package}, or run ./dev test"),
    );
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What every file of the package must be: (path, mode, owner, group).
const FILES: &[(&str, &str, &str, &str)] = &[
    ("/usr/sbin/notebookd", "-rwxr-xr-x", "root", "root"),
    ("/usr/bin/nbctl", "-rwxr-xr-x", "root", "root"),
    (
        "/usr/lib/systemd/system/notebook.service",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/lib/sysusers.d/notebook.conf",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/lib/tmpfiles.d/notebook.conf",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/doc/notebookd/examples/nginx-notebook.conf",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/doc/notebookd/examples/supervisord-notebook.conf",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/doc/notebookd/copyright",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/man/man8/notebookd.8.gz",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/man/man8/nbctl.8.gz",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/man/man5/notebook.toml.5.gz",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/bash-completion/completions/nbctl",
        "-rw-r--r--",
        "root",
        "root",
    ),
    (
        "/usr/share/fish/vendor_completions.d/nbctl.fish",
        "-rw-r--r--",
        "root",
        "root",
    ),
];

/// Files the package ships unchanged from the repository.
const VERBATIM: &[(&str, &str)] = &[
    (
        "/usr/lib/systemd/system/notebook.service",
        "systemd/notebook.service",
    ),
    (
        "/usr/lib/sysusers.d/notebook.conf",
        "packaging/sysusers.d/notebook.conf",
    ),
    (
        "/usr/lib/tmpfiles.d/notebook.conf",
        "packaging/tmpfiles.d/notebook.conf",
    ),
    ("/etc/notebook/notebook.toml", "etc/notebook.toml"),
    (
        "/usr/share/doc/notebookd/examples/nginx-notebook.conf",
        "packaging/examples/nginx-notebook.conf",
    ),
];

/// A package listing parsed by `parse` into path -> (mode, owner, group).
fn listing(
    lines: &str,
    parse: impl Fn(&str) -> Option<(String, String, String, String)>,
) -> BTreeMap<String, (String, String, String)> {
    lines
        .lines()
        .filter_map(parse)
        .map(|(path, mode, user, group)| (path, (mode, user, group)))
        .collect()
}

#[test]
fn deb_contents_scripts_and_lintian() {
    if !(have("dpkg-deb", "dpkg") && have("lintian", "lintian")) {
        return;
    }
    let deb = &packages().deb;

    let fields = run(Command::new("dpkg-deb").arg("-f").arg(deb).args([
        "Package",
        "Version",
        "Depends",
        "Recommends",
    ]));
    assert!(fields.contains("Package: notebookd\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}\n", packages::version(1))),
        "{fields}"
    );
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap();
    for dep in [
        "python3-notebook",
        "jupyter-notebook",
        "jupyter-core",
        "python3-ipykernel",
        "procps",
        "systemd | systemd-standalone-sysusers",
        "libc6",
    ] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    assert!(
        fields.contains("Recommends: python3-matplotlib, python3-scipy, python3-pandas"),
        "{fields}"
    );

    // `-rwxr-xr-x root/root 5822896 2026-11-23 00:00 ./usr/sbin/notebookd`
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let files = listing(&contents, |l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (user, group) = w.get(1)?.split_once('/')?;
        let owner = |id: &str| {
            if id == "0" {
                "root".to_string()
            } else {
                id.to_string()
            }
        };
        Some((
            w.get(5)?.trim_start_matches('.').to_string(),
            w.first()?.to_string(),
            owner(user),
            owner(group),
        ))
    });
    for (path, mode, user, group) in FILES {
        let got = files
            .get(*path)
            .unwrap_or_else(|| panic!("the .deb lacks {path}:\n{contents}"));
        assert_eq!(
            got,
            &(mode.to_string(), user.to_string(), group.to_string()),
            "{path}"
        );
    }
    // zsh completions where Debian's zsh looks.
    assert!(files.contains_key("/usr/share/zsh/vendor-completions/_nbctl"));
    // Shipped 0644 (no password in it yet); postinst makes it root:notebook 0640.
    assert_eq!(files["/etc/notebook/notebook.toml"].0, "-rw-r--r--");
    assert!(files.contains_key("/usr/share/doc/notebookd/changelog.Debian.gz"));
    assert!(
        files.keys().all(|p| !p.starts_with("/lib/")),
        "usr-merged paths only"
    );

    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(unpacked.path()));
    let u = unpacked.path();
    for (installed, source) in VERBATIM {
        assert_eq!(
            std::fs::read(u.join(installed.trim_start_matches('/'))).unwrap(),
            std::fs::read(repo_root().join(source)).unwrap(),
            "{installed} differs from {source}"
        );
    }
    let conffiles = std::fs::read_to_string(u.join("DEBIAN/conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/notebook/notebook.toml");
    let postinst = std::fs::read_to_string(u.join("DEBIAN/postinst")).unwrap();
    let sysusers = postinst.find("systemd-sysusers notebook.conf").unwrap();
    let cert = postinst.find("nbctl cert generate").unwrap();
    let start = postinst.find("deb-systemd-invoke $_dh_action").unwrap();
    assert!(
        sysusers < cert && cert < start,
        "user, then certificate, then start:\n{postinst}"
    );
    assert!(
        postinst.contains("_dh_action=restart"),
        "restart on upgrade"
    );
    let prerm = std::fs::read_to_string(u.join("DEBIAN/prerm")).unwrap();
    assert!(prerm.contains("deb-systemd-invoke stop"), "{prerm}");
    let postrm = std::fs::read_to_string(u.join("DEBIAN/postrm")).unwrap();
    assert!(
        postrm.contains("rm -rf /etc/notebook /var/lib/notebook"),
        "{postrm}"
    );

    // lintian: no errors, no warnings (overrides are in the package, each
    // with its reason).
    for deb in [&packages().deb, &packages().deb_next] {
        let out = Command::new("lintian").arg(deb).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let complaints: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
            .collect();
        assert!(
            complaints.is_empty() && out.status.success(),
            "lintian {}: {}\n{text}{}",
            deb.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rpm_contents_scripts_and_rpmlint() {
    if !(have("rpm", "rpm") && have("rpmlint", "rpmlint")) {
        return;
    }
    let rpm = &packages().rpm;
    let query = |args: &[&str]| run(Command::new("rpm").arg("-qp").args(args).arg(rpm));

    let requires = query(&["--requires"]);
    for dep in [
        "python3-notebook",
        "python3-ipykernel",
        "/usr/bin/kill",
        "/usr/bin/systemd-sysusers",
        "/bin/sh",
    ] {
        assert!(
            requires.lines().any(|l| l.trim() == dep),
            "Requires lacks {dep}:\n{requires}"
        );
    }
    let recommends = query(&["--recommends"]);
    for dep in ["python3-matplotlib", "python3-scipy", "python3-pandas"] {
        assert!(
            recommends.contains(dep),
            "Recommends lacks {dep}: {recommends}"
        );
    }
    assert_eq!(
        query(&["--qf", "%{VERSION}-%{RELEASE}"]),
        packages::version(1)
    );
    // %config(noreplace): flags "cn".
    let flags = query(&["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
    assert!(
        flags.contains("/etc/notebook/notebook.toml cn\n"),
        "{flags}"
    );

    // The scriptlets are the files in packaging/rpm/, in their slots.
    let scripts = query(&["--scripts"]);
    for (slot, file) in [
        ("preinstall", "pre.sh"),
        ("postinstall", "post.sh"),
        ("preuninstall", "preun.sh"),
        ("postuninstall", "postun.sh"),
    ] {
        let body = std::fs::read_to_string(repo_root().join("packaging/rpm").join(file)).unwrap();
        let at = scripts
            .find(&format!("{slot} scriptlet"))
            .unwrap_or_else(|| panic!("no {slot} scriptlet:\n{scripts}"));
        assert!(
            scripts[at..].contains(body.trim()),
            "the {slot} scriptlet is not packaging/rpm/{file}:\n{scripts}"
        );
    }
    // %pre creates the user exactly as the sysusers.d file says.
    let sysusers =
        std::fs::read_to_string(repo_root().join("packaging/sysusers.d/notebook.conf")).unwrap();
    let user_line = sysusers.lines().find(|l| l.starts_with("u ")).unwrap();
    assert!(
        scripts.contains(user_line),
        "%pre's user differs from sysusers.d"
    );

    // Installed into an empty root with --nodeps and --noscripts (the
    // scriptlets run for real in rpm_scriptlets_run_under_systemd); the
    // group notebook exists there, as %pre would have made it.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnotebook:x:997:997::/var/lib/notebook:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nnotebook:x:997:\n").unwrap();
    run(Command::new("rpm").arg("--root").arg(r).arg("--initdb"));
    run(Command::new("rpm")
        .arg("--root")
        .arg(r)
        .args(["-i", "--nodeps", "--noscripts"])
        .arg(rpm));
    // `-rwxr-xr-x    1 root     root   7346152 Nov 23 17:48 /usr/sbin/notebookd`
    let listed = run(Command::new("rpm")
        .arg("--root")
        .arg(r)
        .args(["-qlv", "notebookd"]));
    let files = listing(&listed, |l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        Some((
            w.last()?.to_string(),
            w.first()?.to_string(),
            w.get(2)?.to_string(),
            w.get(3)?.to_string(),
        ))
    });
    let rpm_files: Vec<_> = FILES
        .iter()
        .map(|(p, m, u, g)| (p.to_string(), m.to_string(), u.to_string(), g.to_string()))
        .chain([
            (
                "/etc/notebook/notebook.toml".to_string(),
                "-rw-r-----".to_string(),
                "root".to_string(),
                "notebook".to_string(),
            ),
            // zsh completions where Fedora's and openSUSE's zsh look.
            (
                "/usr/share/zsh/site-functions/_nbctl".to_string(),
                "-rw-r--r--".to_string(),
                "root".to_string(),
                "root".to_string(),
            ),
        ])
        .collect();
    for (path, mode, user, group) in &rpm_files {
        let got = files
            .get(path)
            .unwrap_or_else(|| panic!("the .rpm lacks {path}:\n{listed}"));
        assert_eq!(got, &(mode.clone(), user.clone(), group.clone()), "{path}");
        // On disk, as rpm installed them.
        let meta = std::fs::metadata(r.join(path.trim_start_matches('/'))).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, if group == "notebook" { 997 } else { 0 }),
            "{path} on disk"
        );
    }
    for (installed, source) in VERBATIM {
        assert_eq!(
            std::fs::read(r.join(installed.trim_start_matches('/'))).unwrap(),
            std::fs::read(repo_root().join(source)).unwrap(),
            "{installed} differs from {source}"
        );
    }

    // rpmlint: no errors, no warnings beyond the reviewed filters.
    for rpm in [&packages().rpm, &packages().rpm_next] {
        let out = Command::new("rpmlint")
            .arg("-c")
            .arg(repo_root().join("packaging/rpm/rpmlint.toml"))
            .arg(rpm)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("0 errors, 0 warnings"),
            "rpmlint {}: {}\n{text}{}",
            rpm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rpm_scriptlets_run_under_systemd() {
    if !container::available() {
        return;
    }
    let pkgs = packages();
    let c = Container::boot();
    let port = free_port();
    let enabled = || {
        c.sh("systemctl is-enabled notebook")
            .stdout
            .trim()
            .to_string()
    };
    let active = || {
        c.sh("systemctl is-active notebook")
            .stdout
            .trim()
            .to_string()
    };
    let preset = "/etc/systemd/system-preset/50-notebookd-test.preset";

    // Preset policy "disable": %post creates the user and the certificate,
    // and leaves the service disabled and stopped.
    c.write(preset, "disable notebook.service\n");
    c.copy_in(&pkgs.rpm, "/tmp/notebookd-1.rpm");
    c.ok("rpm -i --nodeps /tmp/notebookd-1.rpm 2>&1");
    assert!(
        c.ok("getent passwd notebook")
            .contains(":/var/lib/notebook:")
    );
    let modes = c.ok("stat -c '%n %U:%G %a' /etc/notebook/notebook.toml /etc/notebook/tls/key.pem /etc/notebook/tls/cert.pem /var/lib/notebook");
    for expected in [
        "/etc/notebook/notebook.toml root:notebook 640",
        "/etc/notebook/tls/key.pem root:notebook 640",
        "/etc/notebook/tls/cert.pem root:root 644",
        "/var/lib/notebook notebook:notebook 700",
    ] {
        assert!(modes.contains(expected), "want {expected}:\n{modes}");
    }
    assert_eq!(
        (enabled().as_str(), active().as_str()),
        ("disabled", "inactive")
    );
    let cert = std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap();
    c.ok("rpm -e notebookd 2>&1");

    // Preset policy "enable": enabled, still not started by the package.
    c.write(preset, "enable notebook.service\n");
    // The admin's config (a port of the test's own) is kept: noreplace.
    let config = container::preseeded_config(&format!("127.0.0.1:{port}"));
    c.write("/etc/notebook/notebook.toml", &config);
    c.ok("rpm -i --nodeps /tmp/notebookd-1.rpm 2>&1");
    assert_eq!(
        std::fs::read_to_string(c.path("/etc/notebook/notebook.toml")).unwrap(),
        config
    );
    assert_eq!(
        std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap(),
        cert,
        "the certificate is made once"
    );
    assert_eq!(
        (enabled().as_str(), active().as_str()),
        ("enabled", "inactive")
    );
    // What the Requires pull in on an rpm distribution; here Debian's apt
    // installs it (rpm ran with --nodeps).
    c.ok("apt-get install -y -q jupyter-notebook python3-notebook python3-ipykernel 2>&1");
    c.ok("systemctl start notebook");
    let b = Browser::trusting(&format!("https://localhost:{port}/"), &cert, None);
    assert_eq!(b.get("").await.status(), 503, "the set-a-password page");

    // Upgrade: %postun of the old package restarts the running service.
    let pid = c.unit_property("notebook", "MainPID");
    c.copy_in(&pkgs.rpm_next, "/tmp/notebookd-2.rpm");
    c.ok("rpm -U --nodeps /tmp/notebookd-2.rpm 2>&1");
    assert_eq!(
        c.ok("rpm -q --qf '%{VERSION}-%{RELEASE}' notebookd"),
        packages::version(2)
    );
    c.wait_for(
        "the service restarted on upgrade",
        Duration::from_secs(30),
        || active() == "active" && c.unit_property("notebook", "MainPID") != pid,
    );
    assert_eq!(enabled(), "enabled");

    // Erase: %preun disables and stops it; config, certificate and state stay.
    c.ok("rpm -e notebookd 2>&1");
    assert_ne!(active(), "active");
    assert!(!c.path("/usr/lib/systemd/system/notebook.service").exists());
    assert!(
        !c.path("/etc/systemd/system/multi-user.target.wants/notebook.service")
            .exists()
    );
    assert!(c.path("/etc/notebook/tls/key.pem").exists());
    assert!(c.path("/var/lib/notebook").exists());
    assert!(
        c.path("/etc/notebook/notebook.toml.rpmsave").exists(),
        "the changed config is kept as .rpmsave"
    );
    assert!(c.processes_matching("/usr/sbin/notebookd").is_empty());
}
