"""telemetry.build and the state gauges: what a server and a client agent report, from their parts."""

from types import SimpleNamespace

from appliance import telemetry
from appliance.config.runtime import Telemetry as TelemetryConfig
from appliance.raft.metrics import RaftMetrics
from appliance.state.store import Store


def consensus(leader: bool = False) -> SimpleNamespace:
    return SimpleNamespace(metrics=RaftMetrics(), is_leader=leader, peers=lambda: ["a", "b", "c"],
                           stats=lambda: {"applied_index": "7", "last_log_index": "9", "commit_index": "8",
                                          "term": "2", "last_contact": "never"})


def parts(cons: SimpleNamespace) -> dict:
    return {"consensus": cons, "hub": SimpleNamespace(parked=3), "store": Store(),
            "local": SimpleNamespace(checks={}, services={})}


def gauges(tel: telemetry.Telemetry) -> dict[str, float]:
    return {name: value for name, labels, value in tel.computed_gauges()}


def test_build_on_a_server_reports_raft_and_the_catalog():
    cons = consensus(leader=True)
    tel = telemetry.build(TelemetryConfig(disable_hostname=True, metrics_prefix="cairn"), **parts(cons), raft=cons)
    assert isinstance(cons.metrics, telemetry.RaftTelemetry) and cons.metrics.tel is tel
    g = gauges(tel)
    assert g["cairn.rpc.queries_blocking"] == 3
    assert (g["cairn.raft.applied_index"], g["cairn.raft.last_index"], g["cairn.raft.commit_index"],
            g["cairn.raft.term"]) == (7, 9, 8, 2)
    assert g["cairn.raft.peers"] == 3 and g["cairn.server.isLeader"] == 1 and g["cairn.state.nodes"] == 0


def test_build_on_a_client_reports_no_raft_peers_nor_catalog():
    cons = consensus()
    tel = telemetry.build(TelemetryConfig(disable_hostname=True), **parts(cons), raft=None)
    g = gauges(tel)
    assert g["consul.raft.applied_index"] == 7
    assert not any(k.startswith(("consul.raft.peers", "consul.state.", "consul.server.")) for k in g)
