"""Local agent state, anti-entropy planning, definitions and the watch hub."""

from __future__ import annotations

import asyncio

import pytest

from appliance.local.definitions import (
    DefinitionError,
    UnknownFieldError,
    parse_check_definition,
    parse_service_definition,
)
from appliance.local.state import NODE_MAINT_ID, LocalState, NotFound, truncate_output
from appliance.local.sync import plan_sync
from appliance.state.fsm import FSM
from appliance.state.store import Store
from appliance.watch import WatchHub

NODE_INFO = {"Node": "n1", "ID": "id", "Address": "127.0.0.1", "Datacenter": "dc1",
             "TaggedAddresses": {"lan": "127.0.0.1"}, "NodeMeta": {"consul-version": "1.17.0"}}


# ---------------------------------------------------------------- definitions (reference/consul-api.md §4.1, §7.2)


def test_service_definition_accepts_snake_case_and_any_case():
    svc = parse_service_definition({"name": "web", "ENABLE_TAG_OVERRIDE": True, "tagged_addresses":
                                    {"lan": {"address": "10.0.0.1", "port": 80}}, "Check": {"ttl": "10s"}})
    assert svc.id == "web" and svc.enable_tag_override
    assert svc.tagged_addresses == {"lan": {"Address": "10.0.0.1", "Port": 80}}
    [check] = svc.checks
    assert (check.id, check.name, check.kind, check.status) == ("service:web", "Service 'web' check", "ttl", "critical")


def test_multiple_service_checks_are_numbered():
    svc = parse_service_definition({"Name": "web", "ID": "w1", "Check": {"TTL": "1s"},
                                    "Checks": [{"TTL": "1s"}, {"TTL": "1s", "CheckID": "mine"}]})
    assert [c.id for c in svc.checks] == ["service:w1:1", "service:w1:2", "mine"]


@pytest.mark.parametrize("body, text", [
    ({}, "Missing service name"),
    ({"Name": "x", "Address": "0.0.0.0"}, "Invalid service address"),
    ({"Name": "x", "Weights": {"Passing": 0, "Warning": 1}}, "Invalid Weights: Passing must be greater than 0"),
    ({"Name": "x", "Meta": {"consul-x": "1"}}, "Invalid Service Meta: Key prefix 'consul-' is reserved"),
    ({"Name": "x", "Check": {"TTL": "1s", "Interval": "1s"}}, "Invalid check: Interval and TTL cannot both"),
    ({"Name": "x", "Check": {"HTTP": "http://x"}}, "Invalid check: Interval must be > 0"),
    ({"Name": "x", "Check": {"TTL": "1s", "Status": "bogus"}},
     "Status for checks must 'passing', 'warning', 'critical'"),
])
def test_service_definition_errors_use_consuls_text(body, text):
    with pytest.raises(DefinitionError) as err:
        parse_service_definition(body)
    assert str(err.value).startswith(text)


def test_unknown_field_is_a_decode_error():
    with pytest.raises(UnknownFieldError, match='json: unknown field "Bogus"'):
        parse_service_definition({"Name": "x", "Bogus": 1})


def test_check_durations_accept_strings_and_nanoseconds():
    check = parse_check_definition({"Name": "c", "HTTP": "http://x", "Interval": 10_000_000_000, "Timeout": "1m30s"})
    assert (check.interval_text(), check.timeout_text()) == ("10s", "1m30s")
    assert parse_check_definition({"Name": "c", "TCP": "x:1", "Interval": "100ms"}).interval_s == 1.0  # MinInterval


# ---------------------------------------------------------------- local state


def test_ttl_update_expiry_and_output_truncation():
    local = LocalState("n1", "dc1", output_max_size=8)
    local.add_service(parse_service_definition({"Name": "web", "Check": {"TTL": "10s"}}), now=0.0)
    local.update_ttl("service:web", "passing", "0123456789", now=1.0)
    check = local.check("service:web")
    assert check.status == "passing"
    assert check.output == "01234567 ... (captured 8 of 10 bytes)"
    assert local.expire_ttls(10.9) == []
    assert local.expire_ttls(11.0) == ["service:web"]
    assert check.status == "critical"
    assert check.output.startswith("TTL expired (last output before timeout follows): 01234567")


def test_update_of_non_ttl_check_is_refused():
    local = LocalState("n1", "dc1")
    local.add_check(parse_check_definition({"Name": "h", "HTTP": "http://x", "Interval": "10s"}))
    with pytest.raises(ValueError, match='CheckID "h" does not have associated TTL'):
        local.update_ttl("h", "passing", "", 0.0)


def test_unknown_ids_give_consuls_404_texts():
    local = LocalState("n1", "dc1")
    with pytest.raises(NotFound) as err:
        local.remove_service("nope")
    assert str(err.value) == 'Unknown service ID "nope". Ensure that the service ID is passed, not the service name.'
    with pytest.raises(NotFound) as err:
        local.remove_check("nope")
    assert str(err.value) == 'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.'


def test_maintenance_checks():
    local = LocalState("n1", "dc1")
    local.add_service(parse_service_definition({"Name": "web"}))
    local.set_node_maintenance(True, "")
    local.set_service_maintenance("web", True, "deploy")
    node_maint = local.health_check(local.check(NODE_MAINT_ID))
    assert (node_maint["Status"], node_maint["Type"], node_maint["Name"]) == ("critical", "maintenance",
                                                                           "Node Maintenance Mode")
    assert node_maint["Notes"].startswith("Maintenance mode is enabled for this node")
    svc_maint = local.health_check(local.check("_service_maintenance:web"))
    assert (svc_maint["ServiceID"], svc_maint["Notes"]) == ("web", "deploy")
    local.set_node_maintenance(False, "")
    assert NODE_MAINT_ID not in local.checks


def test_reload_keeps_status_of_unchanged_checks():
    local = LocalState("n1", "dc1")
    svc = parse_service_definition({"Name": "web", "Check": {"TTL": "30s"}}, from_config=True)
    local.replace_config_definitions([svc], [], now=0.0)
    local.update_ttl("service:web", "passing", "fine", 1.0)
    local.replace_config_definitions([svc], [], now=2.0)
    assert local.check("service:web").status == "passing"
    local.replace_config_definitions([], [], now=3.0)
    assert local.services == {} and local.checks == {}


# ---------------------------------------------------------------- anti-entropy plan (reference §9.1)


def apply_plan(store: Store, fsm: FSM, plan, start: int) -> int:
    for _, cmd in plan:
        start += 1
        fsm.apply(start, cmd)
    return start


def test_plan_syncs_node_then_services_with_checks_then_converges():
    store, local = Store(), LocalState("n1", "dc1")
    fsm = FSM(store)
    local.add_service(parse_service_definition({"Name": "web", "Check": {"TTL": "5s"}}))
    plan = plan_sync(store, NODE_INFO, local)
    assert [m for m, _ in plan] == ["Synced node info", "Synced service: service=web"]
    index = apply_plan(store, fsm, plan, 0)
    assert plan_sync(store, NODE_INFO, local) == []
    local.update_ttl("service:web", "passing", "ok", 0.0)
    plan = plan_sync(store, NODE_INFO, local)
    assert [m for m, _ in plan] == ["Synced check: check=service:web"]
    index = apply_plan(store, fsm, plan, index)
    [check] = store.node_checks("n1")
    assert (check["Status"], check["ServiceName"]) == ("passing", "web")


def test_plan_removes_what_the_agent_does_not_have_but_keeps_managed_entries():
    store, local = Store(), LocalState("n1", "dc1")
    fsm = FSM(store)
    fsm.apply(1, {"Type": "register", **NODE_INFO, "Service": {
        "ID": "stray", "Service": "stray", "Tags": [], "Address": "", "Meta": {}, "Port": 1,
        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Proxy": {}, "Connect": {},
        "PeerName": ""}, "Checks": [
        {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing", "Notes": "", "Output": "",
         "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
         "ExposedPort": 0, "Definition": {}}]})
    plan = plan_sync(store, NODE_INFO, local)
    assert [m for m, _ in plan] == ["Deregistered service: service=stray"]


# ---------------------------------------------------------------- watch hub


def test_hub_wakes_only_matching_keys_and_prefixes():
    async def scenario():
        hub = WatchHub()
        web = asyncio.create_task(hub.wait(keys=("svc:web",), timeout=5))
        app = asyncio.create_task(hub.wait(prefixes=("app/",), timeout=5))
        other = asyncio.create_task(hub.wait(keys=("svc:db",), timeout=0.3))
        await asyncio.sleep(0)
        assert hub.parked == 3
        hub.notify({"svc:web", "kv:app/config"})
        assert await web is True and await app is True
        assert await other is False
        assert hub.parked == 0 and not hub._exact and not hub._prefixes

    asyncio.run(scenario())


def test_hub_wait_with_several_keys_and_cancellation():
    async def scenario():
        hub = WatchHub()
        task = asyncio.create_task(hub.wait(keys=("a", "b"), timeout=5))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub.parked == 0 and not hub._exact  # a client that went away leaves nothing behind
        task = asyncio.create_task(hub.wait(keys=("a", "b"), timeout=5))
        await asyncio.sleep(0)
        hub.notify({"b"})
        assert await task is True

    asyncio.run(scenario())


def test_truncate_output_passes_short_text():
    assert truncate_output("ok", 4096) == "ok"
