# cairn %pre: the cairn system user and group, before files owned by the group land.
getent group cairn >/dev/null || groupadd --system cairn
getent passwd cairn >/dev/null ||
    useradd --system --gid cairn --home-dir /var/lib/cairn --no-create-home \
        --shell /sbin/nologin --comment "cairn agent" cairn
exit 0
