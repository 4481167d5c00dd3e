# notebookd %postun. $1: 0 after erase, 1 after upgrade.
# As %systemd_postun_with_restart: after an upgrade, restart the service if
# it runs, so the new binaries serve. Config, certificates and notebooks
# stay after erase (a changed notebook.toml is kept as notebook.toml.rpmsave).
if [ -x /usr/lib/systemd/systemd-update-helper ]; then
    if [ "$1" -ge 1 ]; then
        /usr/lib/systemd/systemd-update-helper mark-restart-system-units notebook.service || :
    fi
else
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
    if [ "$1" -ge 1 ]; then
        systemctl try-restart notebook.service >/dev/null 2>&1 || :
    fi
fi
