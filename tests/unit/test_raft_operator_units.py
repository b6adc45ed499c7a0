"""Pure parts of the Raft operator surface: the snapshot archive (appliance/raft/archive.py),
autopilot's rules (appliance/raft/autopilot.py), the FSM's restore and autopilot commands, and
the CLI's table formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from appliance.cli.operator import format_config, format_peers
from appliance.cli.snapshot import format_inspect
from appliance.raft.archive import ArchiveError, build_archive, read_archive
from appliance.raft.autopilot import (
    ALIVE,
    FAILED,
    LEFT,
    AutopilotConfig,
    AutopilotConfigError,
    AutopilotState,
    ServerState,
    adjudicate_removal,
    failure_tolerance,
    is_healthy,
    next_change,
    update_health,
)
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.driver_autopilot import Autopilot
from appliance.raft.messages import ConfChangeType, Configuration, Server
from appliance.state.fsm import FSM
from appliance.state.snapshot import snapshot
from appliance.state.store import Store

CONF = {"Servers": [{"ID": "a", "Address": "10.0.0.1:8300", "Suffrage": "Voter"}], "Index": 1}
LIMIT = 1 << 20


def archive(state: bytes = b"\x01state", **kw) -> bytes:
    return build_archive(state, index=kw.get("index", 42), term=kw.get("term", 3), configuration=CONF,
                         now_ms=1_700_000_000_123)


def repack(data: bytes, change) -> bytes:
    """Unpack an archive, let `change(files)` edit the members, pack it again (checksums untouched)."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    change(files)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(out.getvalue())


# ------------------------------------------------------------------ archive


def test_archive_round_trip_and_metadata():
    data = archive(b"\x01" + b"x" * 1000)
    meta, state = read_archive(data, max_state_bytes=LIMIT)
    assert state == b"\x01" + b"x" * 1000
    assert (meta.id, meta.index, meta.term, meta.version, meta.size) == ("3-42-1700000000123", 42, 3, 1, 1001)
    assert meta.configuration == CONF
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert tar.getnames() == ["meta.json", "state.bin", "SHA256SUMS"]
        sums = tar.extractfile("SHA256SUMS").read().decode()
        state_bin = tar.extractfile("state.bin").read()
    assert f"{hashlib.sha256(state_bin).hexdigest()}  state.bin" in sums.splitlines()  # sha256sum -c format
    assert data == archive(b"\x01" + b"x" * 1000)  # deterministic for the same input and time


def _flip(name):
    def change(files):
        body = bytearray(files[name])
        body[len(body) // 2] ^= 1
        files[name] = bytes(body)
    return change


@pytest.mark.parametrize("make, text", [
    (lambda: b"", "not gzip-compressed"),
    (lambda: b"PK\x03\x04 a zip file", "not gzip-compressed"),
    (lambda: archive()[:40], "corrupt snapshot archive"),
    (lambda: gzip.compress(b"not a tar archive" * 40), "corrupt snapshot archive"),
    (lambda: repack(archive(), _flip("state.bin")), "SHA256 of state.bin does not match SHA256SUMS"),
    (lambda: repack(archive(), _flip("meta.json")), "SHA256 of meta.json does not match SHA256SUMS"),
    (lambda: repack(archive(), lambda f: f.pop("SHA256SUMS")), "SHA256SUMS is missing"),
    (lambda: repack(archive(), lambda f: f.update({"extra": b""})), "unexpected file 'extra'"),
    (lambda: repack(archive(), lambda f: f.update({"SHA256SUMS": b"nonsense\n"})), "bad SHA256SUMS line"),
], ids=["empty", "zip", "truncated", "not-tar", "state-sum", "meta-sum", "no-sums", "extra-file", "bad-sums"])
def test_bad_archives_are_refused_with_the_reason(make, text):
    with pytest.raises(ArchiveError, match=text):
        read_archive(make(), max_state_bytes=LIMIT)


def _resum(files, meta_change):
    meta = json.loads(files["meta.json"])
    meta_change(meta)
    files["meta.json"] = json.dumps(meta).encode()
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n"
                                  for n in ("meta.json", "state.bin")).encode()


@pytest.mark.parametrize("meta_change, text", [
    (lambda m: m.update(Version=2), "unsupported snapshot archive version 2"),
    (lambda m: m.update(Size=3), "meta.json says 3"),
    (lambda m: m.update(Index="42"), "Index must be a non-negative integer"),
])
def test_consistent_checksums_but_bad_metadata(meta_change, text):
    data = repack(archive(), lambda f: _resum(f, meta_change))
    with pytest.raises(ArchiveError, match=text):
        read_archive(data, max_state_bytes=LIMIT)


def test_archive_decompression_is_bounded():
    bomb = archive(b"\x01" + bytes(4 << 20))  # 4 MiB of zeros compress to a few KiB
    assert len(bomb) < 64 << 10
    with pytest.raises(ArchiveError, match="too large"):
        read_archive(bomb, max_state_bytes=LIMIT)


def test_inspect_table_has_consuls_rows():
    meta, _ = read_archive(archive(), max_state_bytes=LIMIT)
    assert [line.split() for line in format_inspect(meta).splitlines()] == [
        ["ID", "3-42-1700000000123"], ["Size", "6"], ["Index", "42"], ["Term", "3"], ["Version", "1"]]


# ------------------------------------------------------------------ autopilot


def srv(i, **kw) -> ServerState:
    base = dict(id=f"s{i}", address=f"10.0.0.{i}:8300", last_contact_s=0.05, last_term=5, last_index=100)
    base.update(kw)
    return ServerState(**base)


CFG = AutopilotConfig()


def test_health_rules():  # raft-autopilot isHealthy
    assert is_healthy(CFG, srv(1), 5, 100)
    assert is_healthy(CFG, srv(1, leader=True, last_contact_s=99), 5, 100)  # the leader: no contact check
    assert not is_healthy(CFG, srv(1, status=FAILED), 5, 100)
    assert not is_healthy(CFG, srv(1, last_contact_s=0.21), 5, 100)  # > LastContactThreshold 200ms
    assert not is_healthy(CFG, srv(1, last_contact_s=None), 5, 100)
    assert not is_healthy(CFG, srv(1, last_term=4), 5, 100)
    assert is_healthy(CFG, srv(1, last_index=100 - 250), 5, 100)  # MaxTrailingLogs 250
    assert not is_healthy(CFG, srv(1, last_index=100 - 251), 5, 100)


def test_stable_since_moves_only_when_health_changes():
    state = AutopilotState()
    servers = [srv(1, leader=True), srv(2)]
    update_health(state, CFG, servers, 5, 100, now=10.0)
    h = update_health(state, CFG, servers, 5, 100, now=12.0)
    assert h["s2"].healthy and h["s2"].stable_since == 10.0
    h = update_health(state, CFG, [srv(1, leader=True), srv(2, last_contact_s=1.0)], 5, 100, now=13.0)
    assert not h["s2"].healthy and h["s2"].stable_since == 13.0


def test_failure_tolerance():
    state = AutopilotState()
    five = [srv(1, leader=True)] + [srv(i) for i in range(2, 6)]
    assert failure_tolerance(five, update_health(state, CFG, five, 5, 100, 0.0)) == 2
    five[4] = srv(5, status=FAILED)
    assert failure_tolerance(five, update_health(state, CFG, five, 5, 100, 0.0)) == 1
    four = five[:3] + [srv(4, status=FAILED)]
    assert failure_tolerance(four, update_health(state, CFG, four, 5, 100, 0.0)) == 0


def test_new_server_added_as_nonvoter_then_promoted_after_stabilization():
    cfg = AutopilotConfig(server_stabilization_time_s=10)
    state = AutopilotState()
    servers = [srv(1, leader=True), srv(2), srv(3), srv(4, in_configuration=False, voter=False)]
    change = next_change(cfg, servers, update_health(state, cfg, servers, 5, 100, 0.0), 0.0)
    assert (change.type, change.id, change.address) == (ConfChangeType.ADD_NONVOTER, "s4", "10.0.0.4:8300")
    servers[3] = srv(4, voter=False)
    assert next_change(cfg, servers, update_health(state, cfg, servers, 5, 100, 1.0), 1.0) is None
    change = next_change(cfg, servers, update_health(state, cfg, servers, 5, 100, 11.0), 11.0)
    assert (change.type, change.id) == (ConfChangeType.ADD_VOTER, "s4")


def test_promotion_comes_before_removal():  # never promote and remove in one round
    cfg = AutopilotConfig(server_stabilization_time_s=0)
    servers = [srv(1, leader=True), srv(2), srv(3, status=FAILED), srv(4, voter=False)]
    health = update_health(AutopilotState(), cfg, servers, 5, 100, 0.0)
    assert next_change(cfg, servers, health, 0.0).type == ConfChangeType.ADD_VOTER


def test_dead_server_cleanup_order_and_switch():
    servers = [srv(1, leader=True), srv(2), srv(3), srv(4, status=FAILED), srv(5, status=LEFT, voter=False)]
    health = update_health(AutopilotState(), CFG, servers, 5, 100, 0.0)
    change = next_change(CFG, servers, health, 0.0)
    assert (change.type, change.id) == (ConfChangeType.REMOVE_SERVER, "s5")  # non-voters first
    servers.pop()
    assert next_change(CFG, servers, health, 0.0).id == "s4"
    off = AutopilotConfig(cleanup_dead_servers=False)
    assert next_change(off, servers, health, 0.0) is None
    assert next_change(CFG, [srv(1, leader=True, status=FAILED), srv(2), srv(3)], health, 0.0) is None


def test_adjudicate_removal_keeps_min_quorum_and_never_removes_a_majority():
    failed = [srv(i, status=FAILED) for i in (4, 5)]
    assert [s.id for s in adjudicate_removal(failed, voters=5, min_quorum=0)] == ["s4", "s5"]  # (5-1)/2 = 2
    assert [s.id for s in adjudicate_removal(failed, voters=5, min_quorum=4)] == ["s4"]
    assert [s.id for s in adjudicate_removal(failed, voters=3, min_quorum=0)] == ["s4"]  # (3-1)/2 = 1
    assert adjudicate_removal(failed, voters=2, min_quorum=0) == []  # removing 1 of 2 is a majority
    assert adjudicate_removal(failed, voters=3, min_quorum=3) == []
    nonvoter = [srv(6, status=FAILED, voter=False)]
    assert adjudicate_removal(nonvoter, voters=2, min_quorum=5) == nonvoter


def test_autopilot_config_api_round_trip_and_errors():
    api = CFG.to_api()
    assert api == {"CleanupDeadServers": True, "LastContactThreshold": "200ms", "MaxTrailingLogs": 250,
                   "MinQuorum": 0, "ServerStabilizationTime": "10s", "RedundancyZoneTag": "",
                   "DisableUpgradeMigration": False, "UpgradeVersionTag": ""}
    changed = CFG.merged({"CleanupDeadServers": False, "ServerStabilizationTime": "1m30s", "ModifyIndex": 9})
    assert changed.cleanup_dead_servers is False and changed.server_stabilization_time_s == 90
    assert changed.max_trailing_logs == 250  # untouched fields keep their value
    assert CFG.merged({"LastContactThreshold": 500_000_000}).last_contact_threshold_s == 0.5  # nanoseconds
    for body, text in (({"Nope": 1}, 'unknown field "Nope"'), ({"MinQuorum": "3"}, "must be an integer"),
                       ({"CleanupDeadServers": "yes"}, "must be a boolean"),
                       ({"LastContactThreshold": "soon"}, "invalid duration"),
                       ({"MinQuorum": -1}, "must not be negative"), ([], "JSON object")):
        with pytest.raises(AutopilotConfigError, match=text):
            CFG.merged(body)


def test_get_config_lines():
    assert format_config(CFG.to_api()).splitlines()[:3] == [
        "CleanupDeadServers = true", "LastContactThreshold = 200ms", "MaxTrailingLogs = 250"]
    assert 'RedundancyZoneTag = ""' in format_config(CFG.to_api())


def test_list_peers_columns():
    text = format_peers({"Servers": [
        {"ID": "a", "Node": "n1", "Address": "10.0.0.1:8300", "Leader": True, "Voter": True,
         "ProtocolVersion": "3", "LastIndex": 12},
        {"ID": "b", "Node": "n2", "Address": "10.0.0.2:8300", "Leader": False, "Voter": False,
         "ProtocolVersion": "3", "LastIndex": 11},
        {"ID": "c", "Node": "n3", "Address": "10.0.0.3:8300", "Leader": False, "Voter": True,
         "ProtocolVersion": "3", "LastIndex": 9}]})
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit", "Index", "Trails",
                       "Leader", "By"]
    assert rows[1][3:] == ["leader", "true", "3", "12", "-"]
    assert rows[2][3:] == ["follower", "false", "3", "11", "1", "commit"]
    assert rows[3][3:] == ["follower", "true", "3", "9", "3", "commits"]


# ------------------------------------------------------------------ FSM commands


def test_restore_command_replaces_the_store_and_touches_every_key():
    store = Store()
    fsm = FSM(store)
    fsm.apply(1, {"Type": "kv_set", "Key": "a", "Value": b"1"})
    saved = snapshot(store)
    fsm.apply(2, {"Type": "kv_set", "Key": "b", "Value": b"2"})
    fsm.apply(3, {"Type": "kv_set", "Key": "a", "Value": b"changed"})
    same_object = store
    applied = fsm.apply(4, {"Type": "restore", "State": saved})
    assert applied.result is True and store is same_object
    assert sorted(store.kv) == ["a"] and store.kv["a"]["Value"] == b"1"
    assert {"kv:a", "kv:b", "kvs"} <= applied.touched  # old and new keys: every blocking query wakes
    assert store.index_of("kv:a") == 4 and store.index_of("kv:b") == 4 and store.last_index == 4
    bad = fsm.apply(5, {"Type": "restore", "State": b"\x09junk"})
    assert "cannot restore snapshot" in str(bad.result) and sorted(store.kv) == ["a"]


def test_autopilot_command_cas_and_init():
    store = Store()
    fsm = FSM(store)
    config = CFG.to_api()
    assert fsm.apply(3, {"Type": "autopilot", "Init": True, "Config": config}).result is True
    assert store.autopilot["CreateIndex"] == 3 and store.autopilot["ModifyIndex"] == 3
    assert fsm.apply(4, {"Type": "autopilot", "Init": True, "Config": {**config, "MinQuorum": 9}}).result is False
    assert fsm.apply(5, {"Type": "autopilot", "CAS": 2, "Config": {**config, "MinQuorum": 3}}).result is False
    assert fsm.apply(6, {"Type": "autopilot", "CAS": 3, "Config": {**config, "MinQuorum": 3}}).result is True
    assert store.autopilot["MinQuorum"] == 3 and store.autopilot["CreateIndex"] == 3
    assert store.autopilot["ModifyIndex"] == 6
    restored = Store()
    FSM(restored).apply(7, {"Type": "restore", "State": snapshot(store)})
    assert restored.autopilot["MinQuorum"] == 3  # snapshots carry the autopilot configuration


# ------------------------------------------------------------------ what the leader's autopilot considers


class ClockedAutopilot(Autopilot):
    """Autopilot on a real (not started) RaftDriver, with the clock in the test's hands."""

    def __init__(self, driver):
        self.clock = 100.0
        super().__init__(driver, defaults=AutopilotConfig(), version="1.17.0")

    def _now(self) -> float:
        return self.clock


def _autopilot() -> ClockedAutopilot:
    driver = RaftDriver(Store(), node_id="a", address="a:8300", storage=MemoryStorage(),
                        config=RaftConfig(raft_multiplier=1))
    driver.open(Configuration((Server("a", "a:8300"), Server("b", "b:8300"), Server("c", "c:8300"))))
    ap = ClockedAutopilot(driver)
    ap.leading_since = 100.0
    return ap


def _candidates(ap) -> list[str]:
    return [s.id for s in ap.server_states() if not s.in_configuration]


def test_only_servers_seen_lately_and_since_their_removal_are_candidates():
    ap = _autopilot()
    assert ap.failed_after_s == 5.0  # five election timeouts at raft_multiplier 1
    ap.server_seen("d", "d:8300")
    ap.server_seen("a", "a:8300")  # this server itself: ignored
    ap.clock = 101.0
    assert _candidates(ap) == ["d"]
    ap.clock = 104.0  # its last HELLO is more than 3 s old: it may be dead
    assert _candidates(ap) == []
    ap.server_seen("d", "d:8300")
    ap.removed["d"] = 104.5  # an operator removed it after that HELLO
    ap.clock = 105.0
    assert _candidates(ap) == []
    ap.server_seen("d", "d:8300")  # alive after its removal: Consul adds it back
    assert _candidates(ap) == ["d"]
    ap.server_failed("d")
    assert _candidates(ap) == []
    ap.server_seen("d", "d:8300")
    ap.server_left("d")
    assert _candidates(ap) == []
    ap.server_alive("d")  # it rejoined
    assert _candidates(ap) == ["d"]


def test_status_of_members_from_contact_and_discovery():
    ap = _autopilot()
    ap.clock = 104.0
    states = {s.id: s for s in ap.server_states()}
    assert [states[i].status for i in "abc"] == [ALIVE, ALIVE, ALIVE]
    assert states["a"].last_contact_s == 0.0 and states["b"].last_contact_s is None
    ap.clock = 105.5  # never heard from b or c for longer than five election timeouts
    assert {s.id: s.status for s in ap.server_states()} == {"a": ALIVE, "b": FAILED, "c": FAILED}
    ap.clock = 101.0
    ap.server_left("c")
    assert {s.id: s.status for s in ap.server_states()}["c"] == LEFT


# ------------------------------------------------------------------ CLI edges (no agent needed)


def test_operator_and_snapshot_cli_edges(capsys, tmp_path):
    from appliance.cli import operator, snapshot as snapshot_cli

    assert operator.run([]) == 1 and "Usage: cairn operator <subcommand>" in capsys.readouterr().err
    assert operator.run(["raft", "-h"]) == 0 and "list-peers" in capsys.readouterr().out
    assert operator.run(["raft", "nope"]) == 1 and "Unknown subcommand: operator raft nope" in capsys.readouterr().err
    assert operator.run(["raft", "remove-peer"]) == 1
    assert capsys.readouterr().err.strip() == "Error removing peer: an address or id is required for the peer to remove"
    assert operator.run(["raft", "remove-peer", "-id", "a", "-address", "b:1"]) == 1
    assert "cannot give both an address and id" in capsys.readouterr().err
    assert operator.run(["autopilot", "set-config", "-server-stabilization-time", "soon"]) == 1
    assert 'invalid value "soon" for flag -server-stabilization-time' in capsys.readouterr().err
    path = tmp_path / "s.snap"
    path.write_bytes(archive())
    assert snapshot_cli.run(["inspect", str(path)]) == 0 and "3-42-1700000000123" in capsys.readouterr().out
    path.write_bytes(repack(archive(), _flip("state.bin")))
    assert snapshot_cli.run(["inspect", str(path)]) == 1
    assert "Error verifying snapshot: snapshot archive failed verification" in capsys.readouterr().err
    assert snapshot_cli.run(["inspect"]) == 1 and "Missing FILE argument" in capsys.readouterr().err
