"""The Raft driver's metrics hook: what the driver reports, and the names telemetry gives it.

Rules from reference/prometheus.md §6: hashicorp/raft's metric names as Consul exposes them
through go-metrics' Prometheus sink (counters without `_total`, timers as summaries in ms, the
`peer_id` label on replication timings), and hashicorp/raft's `Stats()` keys for `cairn info`.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from appliance.config.durations import format_duration
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.raft.metrics import RPC_KINDS, RaftMetrics
from appliance.state.store import Store
from appliance.telemetry import RaftTelemetry, Telemetry, instrument
from exporters.exposition import TelemetryCollector, encode


class Recorder(RaftMetrics):
    """A hook that keeps every call, to see when the driver makes them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattribute__(self, name: str):
        if name in vars(RaftMetrics) and not name.startswith("_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *args: calls.append((name, *args))
        return object.__getattribute__(self, name)

    def named(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]


def exposition(tel: Telemetry) -> dict[str, tuple[str, list]]:
    text = encode(TelemetryCollector(tel).collect()).decode()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def one_voter(**config) -> RaftDriver:
    drv = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=MemoryStorage(),
                     config=RaftConfig(raft_multiplier=1, **config))
    drv.open(Configuration((Server("n1", "127.0.0.1:8300"),)))
    return drv


def kv(key: str) -> dict:
    return {"Type": "kv_set", "Verb": "set", "Key": key, "Value": b"v"}


# ---------------------------------------------------------------------- the hook's names


def test_raft_telemetry_uses_consul_names_and_types():
    tel = Telemetry(hostname="h1", disable_hostname=True)
    hook = RaftTelemetry(tel)
    for role in ("follower", "candidate", "leader", "follower"):
        hook.role_changed(role)
    hook.proposal_accepted()
    hook.proposal_accepted()
    hook.committed(4.5, 2)
    hook.dispatched(1.25, 3)
    hook.follower_contact("s2", 40.0)
    hook.append_rpc("s2", 2.0, 5)
    hook.append_rpc("s3", 3.0, 1)
    for kind in RPC_KINDS:
        hook.rpc_handled(kind, 0.5)
    hook.fsm_applied(kv("a"), 0.1)
    hook.command_done(kv("a"), 6.0)
    hook.snapshot_created(7.0)
    hook.snapshot_persisted(8.0)
    fams = exposition(tel)
    counters = {"consul_raft_state_leader": 1, "consul_raft_state_candidate": 1, "consul_raft_state_follower": 2,
                "consul_raft_apply": 2}
    for name, value in counters.items():
        kind, samples = fams[name]
        assert kind == "counter" and [s.value for s in samples] == [value], name
    summaries = ("consul_raft_commitTime", "consul_raft_leader_dispatchLog", "consul_raft_leader_lastContact",
                 "consul_raft_rpc_appendEntries", "consul_raft_rpc_requestVote", "consul_raft_rpc_installSnapshot",
                 "consul_raft_fsm_apply", "consul_fsm_kvs", "consul_kvs_apply", "consul_raft_snapshot_create",
                 "consul_raft_snapshot_persist", "consul_raft_replication_appendEntries_rpc")
    for name in summaries:
        assert fams[name][0] == "summary", name
    assert {s.name: s.value for s in fams["consul_raft_commitTime"][1] if s.name.endswith(("_sum", "_count"))} == {
        "consul_raft_commitTime_sum": 4.5, "consul_raft_commitTime_count": 1}
    # one series per peer, labelled the way hashicorp/raft labels it
    rpc = {s.labels["peer_id"]: s.value for s in fams["consul_raft_replication_appendEntries_rpc"][1]
           if s.name.endswith("_count")}
    assert rpc == {"s2": 1, "s3": 1}
    logs = {s.labels["peer_id"]: s.value for s in fams["consul_raft_replication_appendEntries_logs"][1]}
    assert fams["consul_raft_replication_appendEntries_logs"][0] == "counter" and logs == {"s2": 5, "s3": 1}
    assert [s.value for s in fams["consul_raft_leader_dispatchNumLogs"][1]] == [3]
    assert [s.value for s in fams["consul_raft_commitNumLogs"][1]] == [2]
    assert {s.labels.get("op") for s in fams["consul_fsm_kvs"][1]} == {"set"}


def test_gauges_carry_the_host_name_like_consul():
    tel = Telemetry(hostname="h1", disable_hostname=False)
    RaftTelemetry(tel).dispatched(1.0, 4)
    assert "consul_h1_raft_leader_dispatchNumLogs" in exposition(tel)


def test_last_contact_is_a_time_duration_string():
    # hashicorp/raft's last_contact stat: Go's time.Duration.String(), config/durations.py's formatter
    assert format_duration(0) == "0s"
    assert format_duration(0.0000005) == "500ns"
    assert format_duration(0.0000125) == "12.5µs"
    assert format_duration(0.0335405) == "33.5405ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(123.25) == "2m3.25s"
    assert format_duration(3600 + 60 + 1) == "1h1m1s"


# ---------------------------------------------------------------------- when the driver calls it


def test_driver_reports_elections_proposals_applies_and_snapshots():
    async def main():
        drv = one_voter(snapshot_threshold=20, trailing_logs=5)
        hook = drv.metrics = Recorder()
        await drv.start()
        try:
            for i in range(25):
                assert await drv.propose(kv(f"k{i}")) is True
            await asyncio.gather(*(drv.propose(kv(f"g{i}")) for i in range(10)))
            stats = drv.stats()
        finally:
            await drv.stop()
        return hook, stats

    hook, stats = asyncio.run(main())
    # a single voter: follower at start, then a candidacy won at once
    assert hook.named("role_changed") == [("follower",), ("candidate",), ("leader",)]
    assert len(hook.named("proposal_accepted")) == 35
    committed = hook.named("committed")
    assert len(committed) == 35 and all(ms >= 0 and n >= 1 for ms, n in committed)
    assert max(n for _, n in committed) > 1  # the ten concurrent writes were applied together
    applied = hook.named("fsm_applied")
    assert [c["Key"] for c, _ in applied][:3] == ["k0", "k1", "k2"] and len(applied) == 35
    done = hook.named("command_done")
    assert len(done) == 35 and sum(ms for _, ms in done) >= sum(ms for ms, _ in committed)
    # the leader's own entries were made durable: every proposal in some dispatch, no-op included
    assert sum(n for _, n in hook.named("dispatched")) == 36
    assert len(hook.named("snapshot_created")) == len(hook.named("snapshot_persisted")) == 1
    assert stats["last_snapshot_index"] != "0"
    # no peers: no replication, no RPCs answered
    assert not hook.named("append_rpc") and not hook.named("rpc_handled") and not hook.named("follower_contact")


def test_command_errors_and_not_leader_are_still_timed():
    async def main():
        drv = one_voter()
        hook = drv.metrics = Recorder()
        await drv.start()
        try:
            for command in ({"Type": "register", "Node": "ghost", "SkipNodeUpdate": True},  # the FSM's error
                            {"Type": "no_such_command"}):  # refused before the log
                try:
                    await drv.propose(command)
                except Exception:  # noqa: BLE001 - a CommandError: timed all the same
                    pass
        finally:
            await drv.stop()
        return hook

    hook = asyncio.run(main())
    assert [c["Type"] for c, _ in hook.named("command_done")] == ["register", "no_such_command"]
    assert [c["Type"] for c, _ in hook.named("fsm_applied")] == ["register"]
    assert not hook.named("fsm_apply_error")


def test_stats_show_what_hashicorp_raft_shows():
    async def main():
        drv = one_voter()
        await drv.start()
        try:
            await drv.propose(kv("a"))
            return drv.stats()
        finally:
            await drv.stop()

    stats = asyncio.run(main())
    keys = {"applied_index", "commit_index", "fsm_pending", "last_contact", "last_log_index", "last_log_term",
            "last_snapshot_index", "last_snapshot_term", "latest_configuration", "latest_configuration_index",
            "num_peers", "protocol_version", "protocol_version_max", "protocol_version_min",
            "snapshot_version_max", "snapshot_version_min", "state", "term"}
    assert set(stats) == keys
    assert stats["state"] == "Leader" and stats["last_contact"] == "0" and stats["fsm_pending"] == "0"
    assert stats["latest_configuration"] == "[{Suffrage:Voter ID:n1 Address:127.0.0.1:8300}]"
    follower = RaftDriver(Store(), node_id="n2", address="127.0.0.1:8301", storage=MemoryStorage())
    follower.open()
    assert follower.stats()["last_contact"] == "never" and follower.stats()["state"] == "Follower"


def test_instrument_gives_the_driver_the_telemetry_hook():
    async def main():
        drv = one_voter()
        tel = Telemetry(hostname="h1", disable_hostname=True)
        instrument(tel, consensus=drv, hub=SimpleNamespace(parked=0), store=drv.store,
                   local=SimpleNamespace(checks={}, services={}), raft=drv)
        await drv.start()
        try:
            await drv.propose(kv("a"))
        finally:
            await drv.stop()
        return tel

    fams = exposition(asyncio.run(main()))
    assert [s.value for s in fams["consul_raft_state_leader"][1]] == [1]
    assert [s.value for s in fams["consul_raft_apply"][1]] == [1]
    assert {"consul_raft_commitTime", "consul_raft_fsm_apply", "consul_kvs_apply", "consul_fsm_kvs",
            "consul_raft_leader_dispatchLog"} <= set(fams)
    for gauge in ("consul_raft_applied_index", "consul_raft_last_index", "consul_raft_commit_index",
                  "consul_raft_term", "consul_raft_peers"):
        assert fams[gauge][0] == "gauge", gauge


def test_a_family_name_is_written_once():
    """`consul_raft_peers` is both a recorder gauge and a consul_exporter gauge when the host name
    is left out of gauge names: the text format must carry one TYPE line for it."""
    from prometheus_client.core import GaugeMetricFamily

    tel = Telemetry(hostname="h1", disable_hostname=True)
    tel.set_gauge("raft.peers", 3)
    text = encode([*TelemetryCollector(tel).collect(), GaugeMetricFamily("consul_raft_peers", "peers", value=3)])
    assert text.decode().count("# TYPE consul_raft_peers gauge") == 1
