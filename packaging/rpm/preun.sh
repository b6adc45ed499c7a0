# cairn %preun ($1: 0 on erase, 1 or more on upgrade).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now cairn.service >/dev/null 2>&1 || :
    fi
fi
# Byte code made by %post is not owned by the package.
find /usr/lib/cairn/lib -depth -type d -name __pycache__ -exec rm -rf {} + 2>/dev/null || :
exit 0
