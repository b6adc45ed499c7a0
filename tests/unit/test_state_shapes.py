"""Shared read-only values in the catalog's records (appliance/state/shapes.py): every answer and
snapshot stays byte-for-byte what the records' own values give, and no write to one record can
reach another through a shared value."""

from __future__ import annotations

import copy
import pickle

import msgpack
import orjson
import pytest
from hypothesis import given, settings, strategies as st

from appliance.gossip.serf import Member, MemberStatus
from appliance.reconcile import plan_member
from appliance.state import shapes
from appliance.state.commands import encode_command, validate
from appliance.state.fsm import FSM
from appliance.state.shapes import FrozenDict, FrozenList, Shapes
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store
from appliance.state.views import check_service_nodes, service_node
from tests.unit.test_state import NODE, check, svc


def _log() -> tuple[Store, FSM]:
    store = Store()
    return store, FSM(store)


def _register(fsm: FSM, index: int, service: dict, checks: list[dict] | None = None, node: str = "n1") -> None:
    cmd = {**NODE, "Node": node, "Service": service, "Checks": checks or []}
    # through the log entry codec, as every replica applies it: the FSM gets its own copies
    assert fsm.apply_entry(index, encode_command(cmd)).result is True


def test_default_values_are_one_shared_read_only_copy():
    store, fsm = _log()
    _register(fsm, 1, svc("web-1", "web", ["v1"]), [check("c1", service_id="web-1")])
    _register(fsm, 2, svc("web-2", "web", ["v1"]), [check("c2", service_id="web-2")], node="n2")
    a, b = store.services["n1"]["web-1"], store.services["n2"]["web-2"]
    for field in ("Weights", "Proxy", "Connect", "Meta", "Tags"):
        assert a[field] is b[field], field
    assert type(a["Proxy"]) is FrozenDict and type(a["Proxy"]["MeshGateway"]) is FrozenDict
    c1, c2 = store.checks["n1"]["c1"], store.checks["n2"]["c2"]
    assert c1["Definition"] is c2["Definition"]
    assert c1["ServiceTags"] is a["Tags"]  # a check holds its service's tags, not a copy
    assert c1["ServiceID"] is a["ID"] and c1["Status"] is c2["Status"]
    with pytest.raises(TypeError, match="read-only"):
        a["Proxy"]["Mode"] = "transparent"
    with pytest.raises(TypeError):
        a["Proxy"]["MeshGateway"].update(Mode="local")
    with pytest.raises(TypeError):
        a["Tags"].append("v2")
    with pytest.raises(TypeError):
        c1["ServiceTags"] += ["x"]
    assert b["Proxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}} and b["Tags"] == ["v1"]


def test_a_later_write_to_one_record_leaves_the_others_sharing_its_old_values():
    store, fsm = _log()
    _register(fsm, 1, svc("web-1", "web", ["v1"]), [check("c1", service_id="web-1")])
    _register(fsm, 2, svc("web-2", "web", ["v1"]), [check("c2", service_id="web-2")], node="n2")
    proxied = {**svc("web-1", "web", ["v2"]), "Kind": "connect-proxy", "Weights": {"Passing": 5, "Warning": 1},
               "Proxy": {"DestinationServiceName": "db", "Mode": "", "MeshGateway": {"Mode": "local"}, "Expose": {}}}
    _register(fsm, 3, proxied)
    a, b = store.services["n1"]["web-1"], store.services["n2"]["web-2"]
    assert a["Proxy"]["MeshGateway"] == {"Mode": "local"} and a["Weights"]["Passing"] == 5
    assert b["Proxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}}
    assert b["Weights"] == {"Passing": 1, "Warning": 1} and b["Tags"] == ["v1"]
    assert store.checks["n1"]["c1"]["ServiceTags"] == ["v2"]  # re-stamped with the new tags
    assert store.checks["n2"]["c2"]["ServiceTags"] == ["v1"]
    # a reader's copy is its own, plain and changeable
    mine = copy.deepcopy(b)
    mine["Proxy"]["MeshGateway"]["Mode"] = "remote"
    mine["Tags"].append("v3")
    assert type(mine["Proxy"]) is dict and type(mine["Tags"]) is list
    assert b["Proxy"]["MeshGateway"] == {} and b["Tags"] == ["v1"]
    assert pickle.loads(pickle.dumps(b)) == b and type(pickle.loads(pickle.dumps(b["Tags"]))) is list
    merged = {**b["Proxy"], "Mode": "transparent"}
    assert merged["Mode"] == "transparent" and b["Proxy"]["Mode"] == ""


def test_values_equal_in_python_but_encoded_apart_are_never_shared():
    store, fsm = _log()
    configs = [{"a": 1}, {"a": 1.0}, {"a": True}, {"a": 0.0}, {"a": -0.0}, {"a": 1, "b": 2}, {"b": 2, "a": 1}]
    for i, config in enumerate(configs):
        service = {**svc(f"p{i}", "p"), "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}, "Config": config},
                   "Meta": {"k": "v", "j": "w"} if i % 2 else {"j": "w", "k": "v"}}
        _register(fsm, i + 1, service)
        stored = store.services["n1"][f"p{i}"]
        assert orjson.dumps(stored["Proxy"]["Config"]) == orjson.dumps(config)
        assert msgpack.packb(stored["Proxy"]["Config"]) == msgpack.packb(config)
        assert list(stored["Meta"]) == (["k", "j"] if i % 2 else ["j", "k"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.sampled_from(["", "a", "b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON, min_size=1, max_size=6))
def test_every_record_encodes_exactly_as_its_own_command_did(configs):
    store, fsm = _log()
    for i, config in enumerate(configs):
        proxy = {"Mode": "", "MeshGateway": {}, "Expose": {}, "Config": {"x": config}}
        _register(fsm, i + 1, {**svc(f"s{i}", "s"), "Proxy": proxy})
    for i, config in enumerate(configs):
        stored = store.services["n1"][f"s{i}"]["Proxy"]["Config"]["x"]
        assert orjson.dumps(stored) == orjson.dumps(config)
        assert msgpack.packb(stored, use_bin_type=True) == msgpack.packb(config, use_bin_type=True)
    assert snapshot(restore(snapshot(store))) == snapshot(store)


def test_a_restored_store_shares_its_values_and_answers_the_same():
    store, fsm = _log()
    for i in range(4):
        _register(fsm, i + 1, svc(f"web-{i}", "web", ["v1"]), [check(f"c{i}", service_id=f"web-{i}")], node=f"n{i}")
    data = snapshot(store)
    back = restore(data)
    assert snapshot(back) == data
    assert orjson.dumps(check_service_nodes(back, "web")) == orjson.dumps(check_service_nodes(store, "web"))
    recs = [back.services[f"n{i}"][f"web-{i}"] for i in range(4)]
    assert all(r["Weights"] is recs[0]["Weights"] and r["Tags"] is recs[0]["Tags"] for r in recs)
    c = back.checks["n1"]["c1"]
    assert c["ServiceID"] is recs[1]["ID"] and c["ServiceTags"] is recs[1]["Tags"]
    with pytest.raises(TypeError):
        recs[0]["Meta"]["k"] = "v"


def test_stored_values_can_go_into_a_new_command():
    """The leader's reconciliation copies a node's stored meta and tagged addresses into a command."""
    store, fsm = _log()
    cmd = {**NODE, "TaggedAddresses": {"lan": "10.0.0.1"}, "NodeMeta": {"rack": "r1"},
           "Service": svc("web-1", "web", ["v1"])}
    assert fsm.apply(1, cmd).result is True
    node, service = store.node("n1"), store.services["n1"]["web-1"]
    assert type(node["Meta"]) is FrozenDict and type(service["Tags"]) is FrozenList
    again = {**NODE, "Address": "10.0.0.9", "TaggedAddresses": node["TaggedAddresses"], "NodeMeta": node["Meta"],
             "Service": {k: v for k, v in service.items() if not k.endswith("Index")}}
    assert validate(again) == "register"
    assert fsm.apply(2, again).result is True
    assert encode_command(again) == encode_command(copy.deepcopy(again))
    assert service_node(store.node("n1"), store.services["n1"]["web-1"])["NodeMeta"] == {"rack": "r1"}
    # the member back with another address: the plan keeps the stored meta and tagged addresses
    back = Member("n1", "10.0.0.7", 8301, {"role": "node", "dc": "dc1", "id": "id-1"}, MemberStatus.ALIVE)
    [plan] = plan_member(store, back, datacenter="dc1", self_name="s1", version="1.17.0")
    assert plan["NodeMeta"] is store.node("n1")["Meta"] and validate(plan) == "register"
    assert fsm.apply(3, plan).result is True
    assert store.node("n1")["Address"] == "10.0.0.7" and store.node("n1")["Meta"] == {"rack": "r1"}


def test_the_table_stays_bounded(monkeypatch):
    monkeypatch.setattr(shapes, "MAX_SHAPES", 4)
    table = Shapes()
    held = [table.share({"n": i}) for i in range(10)]
    assert len(table._table) <= 4
    assert [v["n"] for v in held] == list(range(10))
    assert table.share({"n": 9}) is held[9]
    big = {"k": "x" * shapes.MAX_ENCODED}
    assert table.share(big) is big  # too big to share: the record keeps its own
    tags = [f"tag-{i:04d}" for i in range(shapes.MAX_ENCODED // 8)]
    assert table.share(tags) is tags
    assert type(table.share(tags[:50])) is FrozenList
    surrogate = {"k": "\udcff"}  # text msgpack cannot encode strictly: kept, not shared
    assert table.share(surrogate) is surrogate
