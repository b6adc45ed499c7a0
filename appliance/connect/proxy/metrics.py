"""The proxy's metrics, under Consul's `consul.proxy.*` names (reference/connect.md §6.6).

Consul's built-in proxy reports, per public listener, `inbound.conns` (active connections, a
gauge), `inbound.rx_bytes` and `inbound.tx_bytes` labelled `dst=<service>`, and per upstream
`upstream.conns`, `upstream.rx_bytes`, `upstream.tx_bytes` labelled `src`, `dst_type`, `dst`.
cairn adds the refusals Consul only logs: `inbound.handshake_failures` (a client without a
certificate of this CA, plain TCP on the TLS port), `inbound.denied` (an intention denies the
source, at the handshake or when intentions change) and `upstream.dial_failures`. `render()`
writes them in Prometheus' text format with the prefix `consul_proxy_`.
"""

from __future__ import annotations

from collections import defaultdict

Labels = tuple[tuple[str, str], ...]

GAUGES = ("inbound_conns", "upstream_conns")
COUNTERS = ("inbound_rx_bytes", "inbound_tx_bytes", "inbound_handshake_failures", "inbound_denied",
            "upstream_rx_bytes", "upstream_tx_bytes", "upstream_dial_failures")
HELP = {
    "inbound_conns": "Active connections on the public mTLS listener.",
    "inbound_rx_bytes": "Bytes received from clients on the public listener.",
    "inbound_tx_bytes": "Bytes sent to clients on the public listener.",
    "inbound_handshake_failures": "Connections on the public listener refused in the TLS handshake.",
    "inbound_denied": "Connections refused or closed because an intention denies their source.",
    "upstream_conns": "Active connections through an upstream listener.",
    "upstream_rx_bytes": "Bytes received from the upstream service.",
    "upstream_tx_bytes": "Bytes sent to the upstream service.",
    "upstream_dial_failures": "Connections to an upstream that found no instance to reach.",
}


class Metrics:
    def __init__(self, prefix: str = "consul_proxy") -> None:
        self.prefix = prefix
        self.values: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        self.values[name][labels] += amount

    def get(self, name: str, **labels: str) -> float:
        return self.values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines = []
        for name in (*GAUGES, *COUNTERS):
            series = self.values.get(name)
            if not series:
                continue
            full = f"{self.prefix}_{name}"
            lines.append(f"# HELP {full} {HELP[name]}")
            lines.append(f"# TYPE {full} {'gauge' if name in GAUGES else 'counter'}")
            for labels, value in sorted(series.items()):
                text = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{full}{{{text}}} {value:g}")
        return "\n".join(lines) + "\n"
