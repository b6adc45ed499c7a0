# cairn %postun ($1: 0 on erase, 1 or more on upgrade). Erasing keeps the cairn user and
# /var/lib/cairn, as RPM packages do (rpm has no purge); see the install guide to remove them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        # An upgrade restarts a running agent on the new code.
        systemctl try-restart cairn.service >/dev/null 2>&1 || :
    fi
fi
exit 0
