# cairn %post ($1: 1 on install, 2 or more on upgrade).
if [ ! -d /var/lib/cairn ]; then
    install -d -o cairn -g cairn -m 0750 /var/lib/cairn
fi
# Byte code for the distribution's Python 3.11, made here rather than shipped.
/usr/bin/python3.11 -m compileall -q /usr/lib/cairn/lib >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        # Enabled or not by the distribution's presets, as RPM-based systems do.
        systemctl --no-reload preset cairn.service >/dev/null 2>&1 || :
    fi
fi
exit 0
