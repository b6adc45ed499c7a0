"""The state store, the FSM and snapshots: indexes, watch keys and the one write path."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from appliance.state.fsm import FSM, CommandError
from appliance.state.snapshot import SnapshotError, restore, snapshot
from appliance.state.store import Store
from appliance.state.views import catalog_services, check_service_nodes

NODE = {"Type": "register", "Node": "n1", "ID": "id-1", "Address": "10.0.0.1", "Datacenter": "dc1",
        "TaggedAddresses": None, "NodeMeta": {"rack": "r1"}}


def svc(sid: str, name: str, tags: list[str] | None = None) -> dict:
    return {"ID": sid, "Service": name, "Tags": tags or [], "Address": "", "Meta": {}, "Port": 80,
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {}, "PeerName": ""}


def check(cid: str, status: str = "passing", service_id: str = "") -> dict:
    return {"Node": "n1", "CheckID": cid, "Name": cid, "Status": status, "Notes": "", "Output": "",
            "ServiceID": service_id, "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}}


class Log:
    """Applies commands at increasing indexes, as the log does."""

    def __init__(self) -> None:
        self.store = Store()
        self.fsm = FSM(self.store)
        self.index = 0
        self.touched: list[set[str]] = []

    def apply(self, cmd: dict):
        self.index += 1
        applied = self.fsm.apply(self.index, cmd)
        self.touched.append(applied.touched)
        return applied.result


def test_register_sets_create_and_modify_index():
    log = Log()
    assert log.apply({**NODE, "Service": svc("web-1", "web"), "Checks": [check("c1", service_id="web-1")]}) is True
    node = log.store.node("n1")
    assert node["CreateIndex"] == node["ModifyIndex"] == 1
    log.apply({**NODE, "Address": "10.0.0.2"})
    node = log.store.node("N1")  # case-insensitive, like Consul's memdb index
    assert (node["CreateIndex"], node["ModifyIndex"], node["Address"]) == (1, 2, "10.0.0.2")


def test_check_inherits_service_name_and_tags():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web", ["v1"]), "Checks": [check("c1", service_id="web-1")]})
    [c] = log.store.node_checks("n1")
    assert (c["ServiceName"], c["ServiceTags"]) == ("web", ["v1"])
    log.apply({**NODE, "SkipNodeUpdate": True, "Service": svc("web-1", "web", ["v2"])})
    [c] = log.store.node_checks("n1")
    assert c["ServiceTags"] == ["v2"]


def test_identical_write_does_not_bump_indexes():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web")})
    before = log.store.index_of("svc:web")
    log.apply({**NODE, "Service": svc("web-1", "web")})
    assert log.store.index_of("svc:web") == before
    assert log.touched[-1] == set()


def test_watch_keys_are_per_service():
    # Consul docs: blocking queries; a write to one service must not wake another's watchers.
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web")})
    log.apply({**NODE, "SkipNodeUpdate": True, "Service": svc("db-1", "db")})
    web_index = log.store.index_of("svc:web")
    log.apply({**NODE, "SkipNodeUpdate": True, "Checks": [check("c-db", "critical", "db-1")]})
    assert "svc:db" in log.touched[-1] and "svc:web" not in log.touched[-1]
    assert log.store.index_of("svc:web") == web_index
    # a node-level check changes every service on the node
    log.apply({**NODE, "SkipNodeUpdate": True, "Checks": [check("node-check", "critical")]})
    assert {"svc:web", "svc:db"} <= log.touched[-1]
    assert log.store.index_of("svc:web") == log.index


def test_index_is_never_zero():
    assert Store().index_of("svc:nothing") == 1
    assert Store().kv_index("", exact=False) == 1
    assert Store().kv_index("missing", exact=True) == 1


def test_service_for_unknown_node_is_an_error_result():
    log = Log()
    result = log.apply({"Type": "register", "Node": "ghost", "SkipNodeUpdate": True, "Service": svc("a", "a")})
    assert isinstance(result, CommandError)
    assert log.store.node("ghost") is None


def test_check_for_unknown_service_is_an_error_result():
    log = Log()
    result = log.apply({**NODE, "Checks": [check("c", service_id="nope")]})
    assert isinstance(result, CommandError)


def test_deregister_service_removes_its_checks_and_wakes_watchers():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web"), "Checks": [check("c1", service_id="web-1"), check("n")]})
    log.apply({"Type": "deregister", "Node": "n1", "ServiceID": "web-1"})
    assert log.store.service_instances("web") == []
    assert [c["CheckID"] for c in log.store.node_checks("n1")] == ["n"]
    assert "svc:web" in log.touched[-1]


def test_deregister_node_removes_everything():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web"), "Checks": [check("c1", service_id="web-1")]})
    log.apply({"Type": "deregister", "Node": "n1"})
    assert log.store.node("n1") is None
    assert log.store.service_instances("web") == []
    assert list(log.store.iter_checks()) == []
    assert {"nodes", "svc:web", "node:n1"} <= log.touched[-1]


def test_health_service_order_node_checks_first():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web"),
               "Checks": [check("a-svc", service_id="web-1"), check("z-node")]})
    [csn] = check_service_nodes(log.store, "WEB")
    assert [c["CheckID"] for c in csn["Checks"]] == ["z-node", "a-svc"]


def test_catalog_services_union_of_tags():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web", ["b", "a"])})
    log.apply({**NODE, "SkipNodeUpdate": True, "Service": svc("web-2", "web", ["a", "c"])})
    assert catalog_services(log.store) == {"web": ["a", "b", "c"]}


def test_kv_set_cas_and_delete():
    log = Log()
    assert log.apply({"Type": "kv_set", "Key": "a/b", "Value": b"1", "Flags": 7}) is True
    entry = log.store.kv_get("a/b")
    assert (entry["Value"], entry["Flags"], entry["CreateIndex"], entry["ModifyIndex"]) == (b"1", 7, 1, 1)
    # cas=0 only creates
    assert log.apply({"Type": "kv_set", "Verb": "cas", "Index": 0, "Key": "a/b", "Value": b"2"}) is False
    assert log.apply({"Type": "kv_set", "Verb": "cas", "Index": 99, "Key": "a/b", "Value": b"2"}) is False
    assert log.apply({"Type": "kv_set", "Verb": "cas", "Index": 1, "Key": "a/b", "Value": b"2"}) is True
    assert log.store.kv_get("a/b")["ModifyIndex"] == 4
    assert log.apply({"Type": "kv_delete", "Key": "a/b", "Index": 1}) is False
    assert log.apply({"Type": "kv_delete", "Key": "a/b", "Index": 4}) is True
    assert log.store.kv_get("a/b") is None


def test_kv_prefix_index_includes_tombstones():
    # Consul: deleting a key bumps the prefix index so recursive watchers wake.
    log = Log()
    log.apply({"Type": "kv_set", "Key": "app/x", "Value": b"1"})
    log.apply({"Type": "kv_set", "Key": "other", "Value": b"1"})
    assert log.store.kv_index("app/") == 1
    log.apply({"Type": "kv_delete", "Key": "app/x"})
    assert log.store.kv_index("app/") == 3
    log.apply({"Type": "kv_set", "Key": "app/y", "Value": b"1"})
    log.apply({"Type": "kv_delete", "Key": "app/", "Recurse": True})
    assert log.store.kv_list("app/") == []
    assert log.store.kv_index("app/") == 5


def test_unknown_command_is_a_result_not_a_crash():
    log = Log()
    assert isinstance(log.apply({"Type": "nope"}), CommandError)


def test_snapshot_round_trip():
    log = Log()
    log.apply({**NODE, "Service": svc("web-1", "web", ["v1"]), "Checks": [check("c1", service_id="web-1")]})
    log.apply({"Type": "kv_set", "Key": "k", "Value": b"\x00\xff"})
    log.apply({"Type": "kv_set", "Key": "gone", "Value": b"1"})
    log.apply({"Type": "kv_delete", "Key": "gone"})
    restored = restore(snapshot(log.store))
    assert restored.all_nodes() == log.store.all_nodes()
    assert restored.service_instances("web") == log.store.service_instances("web")
    assert restored.kv_get("k")["Value"] == b"\x00\xff"
    assert restored.kv_index("") == log.store.kv_index("")
    assert restored.index_of("svc:web") == log.store.index_of("svc:web")
    assert restored.last_index == log.store.last_index


def test_snapshot_rejects_garbage():
    with pytest.raises(SnapshotError):
        restore(b"")
    with pytest.raises(SnapshotError):
        restore(b"\x09abc")
    with pytest.raises(SnapshotError):
        restore(b"\x01\xc1\xc1")


ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(["a", "a/b", "a/c", "b", "b/a"]), st.binary(max_size=4)),
        st.tuples(st.just("del"), st.sampled_from(["a", "a/", "b", ""]), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_kv_matches_a_dict_model_and_survives_snapshots(sequence):
    log = Log()
    model: dict[str, bytes] = {}
    for op in sequence:
        if op[0] == "set":
            log.apply({"Type": "kv_set", "Key": op[1], "Value": op[2] or None})
            model[op[1]] = op[2] or None
        else:
            log.apply({"Type": "kv_delete", "Key": op[1], "Recurse": op[2]})
            doomed = [k for k in model if (k.startswith(op[1]) if op[2] else k == op[1])]
            for k in doomed:
                del model[k]
        assert {e["Key"]: e["Value"] for e in log.store.kv_list("")} == model
        assert log.store.kv_keys == sorted(model)
    restored = restore(snapshot(log.store))
    assert {e["Key"]: e["Value"] for e in restored.kv_list("")} == model


def test_indexes_are_monotonic_under_random_catalog_writes():
    rng = random.Random(7)
    log = Log()
    last = 0
    for _ in range(300):
        node = f"n{rng.randrange(4)}"
        roll = rng.random()
        if roll < 0.5:
            cmd = {**NODE, "Node": node, "Service": svc(f"s{rng.randrange(3)}", rng.choice(["web", "db"]))}
        elif roll < 0.8:
            cmd = {"Type": "deregister", "Node": node, "ServiceID": f"s{rng.randrange(3)}"}
        else:
            cmd = {"Type": "deregister", "Node": node}
        log.apply(cmd)
        for key in ("svc:web", "svc:db", "nodes", "services"):
            assert log.store.index_of(key) <= log.index
        assert log.store.last_index >= last
        last = log.store.last_index
