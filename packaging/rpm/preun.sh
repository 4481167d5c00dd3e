# notebookd %preun. $1: 0 when the package is erased, 1 on upgrade.
# As %systemd_preun: on erase, disable and stop the service.
if [ "$1" -eq 0 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper remove-system-units notebook.service || :
    else
        systemctl --no-reload disable --now notebook.service >/dev/null 2>&1 || :
    fi
fi
