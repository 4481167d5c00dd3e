# notebookd %pre: the user and group notebook must exist before the files
# that belong to group notebook are installed (as %sysusers_create_compat
# does). The line is packaging/sysusers.d/notebook.conf's.
systemd-sysusers --replace=/usr/lib/sysusers.d/notebook.conf - <<'SYSUSERS' || :
u notebook - "Jupyter notebook server (notebookd)" /var/lib/notebook /usr/sbin/nologin
SYSUSERS
