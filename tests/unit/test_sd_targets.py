"""sd.targets: catalog -> Prometheus target groups with consul_sd's `__meta_consul_*` labels.

Rules are from reference/prometheus.md §2 (labels produced by consul SD) and §3 (http_sd format).
"""

from __future__ import annotations

import re

from hypothesis import given, strategies as st

from appliance.state.fsm import FSM
from appliance.state.store import Store
from sd.targets import Filters, join_host_port, sanitize_label_name, tags_label, target_groups

LEGACY_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # what Prometheus 2.42 accepts


def node(name: str, address: str, meta: dict | None = None, tagged: dict | None = None) -> dict:
    return {"Type": "register", "Node": name, "ID": "", "Address": address, "Datacenter": "dc1",
            "TaggedAddresses": tagged, "NodeMeta": meta or {}}


def svc(sid: str, name: str, *, port: int = 80, address: str = "", tags=None, meta=None) -> dict:
    return {"ID": sid, "Service": name, "Tags": tags or [], "Address": address, "Meta": meta or {}, "Port": port,
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {}, "PeerName": ""}


def check(node_name: str, cid: str, status: str, service_id: str = "") -> dict:
    return {"Node": node_name, "CheckID": cid, "Name": cid, "Status": status, "Notes": "", "Output": "",
            "ServiceID": service_id, "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}}


def build() -> Store:
    store = Store()
    fsm = FSM(store)
    cmds = [
        {**node("n1", "10.0.0.1", {"rack-name": "r1", "env": "prod"}, {"lan": "10.0.0.1", "wan": "1.2.3.4"}),
         "Service": svc("web-1", "web", port=8080, tags=["v1", "blue"], meta={"version": "1.2", "team.name": "a"}),
         "Checks": [check("n1", "serfHealth", "passing"), check("n1", "c-web-1", "passing", "web-1")]},
        {**node("n2", "10.0.0.2", {"rack-name": "r2"}),
         "Service": svc("web-2", "web", port=8080, address="fd00::2", tags=["v1"]),
         "Checks": [check("n2", "c-web-2", "critical", "web-2")]},
        {**node("n2", "10.0.0.2", {"rack-name": "r2"}), "Service": svc("db", "db", port=5432, address="10.9.9.9")},
        {**node("n2", "10.0.0.2", {"rack-name": "r2"}),
         "Checks": [check("n2", "_service_maintenance:db", "critical", "db")]},
    ]
    for i, cmd in enumerate(cmds, 1):
        assert fsm.apply(i, cmd).result is True
    return store


def by_id(groups: list[dict]) -> dict[str, dict]:
    return {g["labels"]["__meta_consul_service_id"]: g for g in groups}


# reference/prometheus.md §2: strutil.SanitizeLabelName
def test_sanitize_label_name():
    assert sanitize_label_name("rack-name") == "rack_name"
    assert sanitize_label_name("team.name/x y") == "team_name_x_y"
    assert sanitize_label_name("ok_Name9") == "ok_Name9"
    assert sanitize_label_name("é") == "_"


@given(st.text(max_size=20))
def test_sanitized_names_are_valid_label_suffixes(key):
    assert re.fullmatch(r"[a-zA-Z0-9_]*", sanitize_label_name(key))
    assert len(sanitize_label_name(key)) == len(key)


# reference/prometheus.md §2: __address__ is net.JoinHostPort
def test_join_host_port():
    assert join_host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert join_host_port("fd00::1", 9100) == "[fd00::1]:9100"
    assert join_host_port("web.example", 0) == "web.example:0"


def test_tags_label_has_separator_at_both_ends():
    assert tags_label(["a", "b"]) == ",a,b,"
    assert tags_label([]) == ",,"
    assert tags_label(None) == ",,"
    assert tags_label(["a"], ";") == ";a;"


def test_labels_of_an_instance():
    groups = by_id(target_groups(build(), Filters(), "dc1"))
    g = groups["web-1"]
    assert g["targets"] == ["10.0.0.1:8080"]  # no service address: the node's
    assert g["labels"] == {
        "__meta_consul_service": "web",
        "__meta_consul_dc": "dc1",
        "__meta_consul_node": "n1",
        "__meta_consul_address": "10.0.0.1",
        "__meta_consul_service_id": "web-1",
        "__meta_consul_service_address": "",
        "__meta_consul_service_port": "8080",
        "__meta_consul_tags": ",v1,blue,",
        "__meta_consul_health": "passing",
        "__meta_consul_metadata_env": "prod",
        "__meta_consul_metadata_rack_name": "r1",
        "__meta_consul_service_metadata_team_name": "a",
        "__meta_consul_service_metadata_version": "1.2",
        "__meta_consul_tagged_address_lan": "10.0.0.1",
        "__meta_consul_tagged_address_wan": "1.2.3.4",
    }


def test_service_address_wins_and_ipv6_is_bracketed():
    groups = by_id(target_groups(build(), Filters(), "dc1"))
    assert groups["web-2"]["targets"] == ["[fd00::2]:8080"]
    assert groups["web-2"]["labels"]["__meta_consul_service_address"] == "fd00::2"
    assert groups["db"]["targets"] == ["10.9.9.9:5432"]


# reference/prometheus.md §1.4: AggregatedStatus, maintenance > critical > warning > passing
def test_health_label_is_aggregated_status():
    groups = by_id(target_groups(build(), Filters(), "dc1"))
    assert groups["web-2"]["labels"]["__meta_consul_health"] == "critical"
    assert groups["db"]["labels"]["__meta_consul_health"] == "maintenance"


# reference/prometheus.md §3: only "targets" and "labels", valid label names
def test_groups_have_only_targets_and_labels_and_valid_names():
    for g in target_groups(build(), Filters(), "dc1"):
        assert set(g) == {"targets", "labels"}
        assert all(isinstance(t, str) for t in g["targets"])
        for name, value in g["labels"].items():
            assert LEGACY_LABEL_NAME.match(name), name
            assert isinstance(value, str)


def test_order_is_service_then_node_then_id():
    ids = [g["labels"]["__meta_consul_service_id"] for g in target_groups(build(), Filters(), "dc1")]
    assert ids == ["db", "web-1", "web-2"]


def test_filters():
    store = build()

    def ids(**kw) -> list[str]:
        return [g["labels"]["__meta_consul_service_id"] for g in target_groups(store, Filters(**kw), "dc1")]

    assert ids(services=("web",)) == ["web-1", "web-2"]
    assert ids(services=("db", "nosuch")) == ["db"]
    assert ids(tags=("v1",)) == ["web-1", "web-2"]
    assert ids(tags=("v1", "blue")) == ["web-1"]  # every tag must match
    assert ids(node_meta=(("rack-name", "r2"),)) == ["db", "web-2"]
    assert ids(passing=True) == ["web-1"]
    assert ids(services=("nosuch",)) == []


def test_watch_keys():
    assert Filters(services=("web",)).watch_keys() == ("svc:web",)
    assert set(Filters().watch_keys()) == {"services", "checks", "nodes"}


def test_index_moves_with_every_change_that_changes_the_answer():
    store = build()
    fsm = FSM(store)
    keys = Filters().watch_keys()
    before = store.index_of(*keys)
    fsm.apply(10, {**node("n2", "10.0.0.2", {"rack-name": "r2"}), "Checks": [check("n2", "c-web-2", "passing",
                                                                                 "web-2")]})
    assert store.index_of(*keys) == 10 > before
    assert store.index_of(*Filters(services=("web",)).watch_keys()) == 10
    fsm.apply(11, {**node("n1", "10.0.0.1", {"rack-name": "r9", "env": "prod"}, {"lan": "10.0.0.1"})})
    assert store.index_of(*keys) == 11
    assert store.index_of(*Filters(services=("web",)).watch_keys()) == 11


def test_group_cache_renders_only_changed_services():
    from sd.targets import GroupCache

    store = build()
    fsm = FSM(store)
    cache = GroupCache()
    first = target_groups(store, Filters(), "dc1", cache)
    assert first == target_groups(store, Filters(), "dc1")
    db_groups = cache.entries[(Filters(), "db")][1]
    fsm.apply(20, {**node("n1", "10.0.0.1", {"rack-name": "r1", "env": "prod"}, {"lan": "10.0.0.1", "wan": "1.2.3.4"}),
                   "Checks": [check("n1", "c-web-1", "critical", "web-1")]})
    second = target_groups(store, Filters(), "dc1", cache)
    assert second == target_groups(store, Filters(), "dc1")  # same answer as a fresh render
    assert by_id(second)["web-1"]["labels"]["__meta_consul_health"] == "critical"
    assert cache.entries[(Filters(), "db")][1] is db_groups  # db was not touched: not rendered again
    # a node change moves the index of every service on the node
    fsm.apply(21, {**node("n2", "10.0.0.2", {"rack-name": "r3"})})
    third = target_groups(store, Filters(), "dc1", cache)
    assert by_id(third)["db"]["labels"]["__meta_consul_metadata_rack_name"] == "r3"
    assert third == target_groups(store, Filters(), "dc1")
