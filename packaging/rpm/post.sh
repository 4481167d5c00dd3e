# notebookd %post. $1: 1 on first install, 2 or more on upgrade.
# The service's directories (%pre made the user and group).
systemd-tmpfiles --create notebook.conf >/dev/null 2>&1 || :
# A certificate for this host on the first install, unless one is there.
if [ "$1" -eq 1 ] && [ ! -e /etc/notebook/tls/cert.pem ] && [ ! -e /etc/notebook/tls/key.pem ]; then
    nbctl cert generate || echo "notebookd: could not make a certificate; run \`sudo nbctl cert generate\`" >&2
fi
# As %systemd_post: on first install, enable the unit if the preset policy
# says so; never start it here (`systemctl enable --now notebook` does).
if [ "$1" -eq 1 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper install-system-units notebook.service || :
    else
        if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
        systemctl --no-reload preset notebook.service >/dev/null 2>&1 || :
    fi
fi
