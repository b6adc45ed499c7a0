"""The LAN gossip pool's metrics under memberlist's and serf's names (`consul.memberlist.*`,
`consul.serf.*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from appliance.gossip.serf_members import SerfView
from appliance.telemetry.recorder import Telemetry

# The gossip driver's internal counter and sample names -> Consul's metric names (memberlist and
# serf). Counters of bytes: udp.sent/received, tcp.sent; counts: tcp.accept/connect, msg.* (state
# changes accepted), serf.member.* (member events). Samples in ms: gossip (one gossip round),
# probeNode (one probe, ping to its end); serf.queue.* (queue depths every 30 s).
GOSSIP_COUNTERS = {
    "udp_sent": "memberlist.udp.sent", "udp_received": "memberlist.udp.received",
    "tcp_sent": "memberlist.tcp.sent", "tcp_accept": "memberlist.tcp.accept",
    "tcp_connect": "memberlist.tcp.connect", "msg_alive": "memberlist.msg.alive",
    "msg_suspect": "memberlist.msg.suspect", "msg_dead": "memberlist.msg.dead",
    "decrypt_failed": "memberlist.decrypt_failed", "decode_errors": "memberlist.decode_errors",
    "member-join": "serf.member.join", "member-leave": "serf.member.left",
    "member-failed": "serf.member.failed", "member-update": "serf.member.update",
    "member-reap": "serf.member.reap", "member-flap": "serf.member.flap", "user": "serf.events",
    "queries": "serf.queries", "query_acks": "serf.query_acks", "query_responses": "serf.query_responses",
    "query_duplicate_acks": "serf.query_duplicate_acks",
    "query_duplicate_responses": "serf.query_duplicate_responses",
}
GOSSIP_SAMPLES = {
    "gossip": "memberlist.gossip", "probe_node": "memberlist.probeNode",
    "queue_intent": "serf.queue.Intent", "queue_event": "serf.queue.Event", "queue_query": "serf.queue.Query",
}


class GossipPool(Protocol):
    """What metrics need of a gossip driver: a place to send its counters and samples, and its
    public read-only view (appliance/gossip/driver.py)."""

    metrics_sink: Callable[[str, str, float], None] | None

    def view(self) -> SerfView | None: ...


def instrument_gossip(tel: Telemetry, driver: GossipPool) -> None:
    """Record the LAN gossip pool's metrics under Consul's names; `memberlist.health.score` and
    `serf.members` are read from the driver's view when metrics are read."""

    def sink(kind: str, name: str, value: float) -> None:
        if kind == "counter":
            metric = GOSSIP_COUNTERS.get(name)
            if metric is not None:
                tel.incr_counter(metric, value)
        else:
            metric = GOSSIP_SAMPLES.get(name)
            if metric is not None:
                tel.add_sample(metric, value)

    driver.metrics_sink = sink
    def gauges() -> list[tuple[str, float, None]]:
        view = driver.view()
        return [("memberlist.health.score", view.health_score if view is not None else 0, None),
                ("serf.members", view.members if view is not None else 0, None)]

    tel.add_gauge_source(gauges)

    def declared() -> None:
        # Alerts use increase(consul_serf_member_flap[15m]): the series must exist before the first
        # flap, as Consul's declared counters do, so it is kept at its total (0 until a flap).
        if tel.prometheus_enabled:
            slot = tel.counters.setdefault((tel.key("serf.member.flap"), ()), [0.0, 0.0])
            slot[1] = tel.monotonic()

    tel.add_read_hook(declared)

