# cairn-dnsmasq %post and %postun: make a running dnsmasq (re)read /etc/dnsmasq.d.
if [ -d /run/systemd/system ] && systemctl --quiet is-active dnsmasq.service; then
    if dnsmasq --test >/dev/null 2>&1; then
        systemctl try-restart dnsmasq.service >/dev/null 2>&1 || :
    else
        echo "cairn-dnsmasq: 'dnsmasq --test' fails; dnsmasq not restarted" >&2
    fi
fi
exit 0
