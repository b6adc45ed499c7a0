"""/v1/session/*, KV locks over HTTP and the sessions' leader side, in-process (a real store, a
one-voter Raft, the leader's TTL timers on a clock the test moves: tests/unit/session_agent.py).

Texts and statuses are Consul's (reference/coordination.md §1-§2; several are 500 with a
plain-text body, which clients such as Patroni match on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from http_inprocess import InProcessAgent, json_body
from session_agent import FakeClock, session_agent

from appliance.sessions.leader import SessionLeader

Scenario = Callable[[InProcessAgent, SessionLeader, FakeClock], Awaitable[Any]]


def run(scenario: Scenario) -> Any:
    async def main() -> Any:
        clock = FakeClock()
        async with session_agent(clock=clock) as (api, leader):
            await api.call("PUT", "/v1/catalog/register", {
                "Node": "n1", "Address": "127.0.0.1",
                "Checks": [{"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"},
                           {"CheckID": "app", "Name": "app", "Status": "passing"}]})
            return await scenario(api, leader, clock)

    return asyncio.run(main())


CRITICAL_APP = {"CheckID": "app", "Name": "app", "Status": "critical"}


def text(answer) -> str:
    return (answer.body or b"").decode()


async def create(api: InProcessAgent, body: Any = None) -> str:
    answer = await api.call("PUT", "/v1/session/create", body if body is not None else b"")
    assert answer.status == 200, text(answer)
    sid: str = json_body(answer)["ID"]
    return sid


async def info(api: InProcessAgent, sid: str) -> dict[str, Any] | None:
    found = json_body(await api.call("GET", f"/v1/session/info/{sid}"))
    return found[0] if found else None


# ------------------------------------------------------------------------------ create and read


def test_python_consul_create_body_with_lowercase_keys():
    # python-consul 0.7.1 + Patroni: lowercase keys, "checks": [], ttl "15.0s", lockdelay "0.001s"
    async def scenario(api, leader, clock):
        sid = await create(api, {"name": "batman-pg1", "checks": [], "lockdelay": "0.001s", "behavior": "delete",
                                 "ttl": "15.0s"})
        rec = await info(api, sid)
        assert rec == {"ID": sid, "Name": "batman-pg1", "Node": "n1", "LockDelay": 1_000_000, "Behavior": "delete",
                       "TTL": "15.0s", "NodeChecks": [], "ServiceChecks": None,
                       "CreateIndex": rec["CreateIndex"], "ModifyIndex": rec["CreateIndex"]}
        renewed = await api.call("PUT", f"/v1/session/renew/{sid}")
        assert renewed.status == 200 and json_body(renewed)[0]["TTL"] == "15.0s"

    run(scenario)


def test_defaults_are_consuls():
    async def scenario(api, leader, clock):
        sid = await create(api)
        rec = await info(api, sid)
        assert (rec["Node"], rec["LockDelay"], rec["Behavior"], rec["TTL"], rec["NodeChecks"]) == (
            "n1", 15_000_000_000, "release", "", ["serfHealth"])
        assert "Checks" not in rec

    run(scenario)


@pytest.mark.parametrize("body, delay_ns", [
    ({"LockDelay": 5}, 5_000_000_000),  # below 1000: seconds
    ({"LockDelay": "500ns"}, 500_000_000_000),  # the same quirk on a string
    ({"LockDelay": 2_000_000_000}, 2_000_000_000),
    ({"LockDelay": "15.0s"}, 15_000_000_000),
    ({"LockDelay": "0s"}, 0),
    ({"LockDelay": 0}, 0),
    ({"LockDelay": None}, 15_000_000_000),  # null keeps the default
    ({"LockDelay": 10**30}, (1 << 63) - 1),  # Go's Duration at most
])
def test_lock_delay_decoding(body, delay_ns):
    async def scenario(api, leader, clock):
        assert (await info(api, await create(api, body)))["LockDelay"] == delay_ns

    run(scenario)


@pytest.mark.parametrize("body, checks", [
    ({"Checks": ["app"]}, ["app", "serfHealth"]),  # legacy Checks keeps the NodeChecks default
    ({"NodeChecks": ["app"]}, ["app"]),
    ({"NodeChecks": []}, []),
    ({"Checks": []}, []),
    ({"Checks": None}, []),
    ({"Checks": ["serfHealth"]}, ["serfHealth"]),
])
def test_check_fixup(body, checks):
    async def scenario(api, leader, clock):
        rec = await info(api, await create(api, body))
        got = list(rec.get("Checks") or []) + [c for c in rec["NodeChecks"] or [] if c not in (rec.get("Checks") or [])]
        assert got == checks

    run(scenario)


def test_node_and_list_and_blocking_info():
    async def scenario(api, leader, clock):
        a, b = await create(api), await create(api, {"Name": "b"})
        listed = json_body(await api.call("GET", "/v1/session/list"))
        assert [s["ID"] for s in listed] == sorted([a, b])
        assert len(json_body(await api.call("GET", "/v1/session/node/N1"))) == 2
        assert json_body(await api.call("GET", "/v1/session/node/ghost")) == []
        answer = await api.call("GET", "/v1/session/info/unknown")
        assert answer.status == 200 and json_body(answer) == [] and int(answer.headers["X-Consul-Index"]) >= 1
        index = int(answer.headers["X-Consul-Index"])
        parked = asyncio.create_task(api.call("GET", f"/v1/session/info/{a}?index={index}&wait=5s"))
        await asyncio.sleep(0.05)
        await api.call("PUT", f"/v1/session/renew/{a}")  # a renew changes no index
        await asyncio.sleep(0.05)
        assert not parked.done()
        await api.call("PUT", f"/v1/session/destroy/{b}")
        woke = await asyncio.wait_for(parked, 5)
        assert int(woke.headers["X-Consul-Index"]) > index

    run(scenario)


@pytest.mark.parametrize("method, path, body, status, expected", [
    ("PUT", "/v1/session/create", {"TTL": "5s"}, 500,
     "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
    ("PUT", "/v1/session/create", {"TTL": "25h"}, 500,
     "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]"),
    ("PUT", "/v1/session/create", {"TTL": "soon"}, 500, "Session TTL 'soon' invalid: time: invalid duration \"soon\""),
    ("PUT", "/v1/session/create", {"Behavior": "keep"}, 500, "Invalid Behavior setting 'keep'"),
    ("PUT", "/v1/session/create", {"NodeChecks": ["nope"]}, 500, "Missing check 'nope' registration"),
    ("PUT", "/v1/session/create", {"Node": "ghost"}, 500, "Missing node registration"),
    ("PUT", "/v1/session/create", {"Bogus": 1}, 400, 'Request decode failed: json: unknown field "Bogus"'),
    ("PUT", "/v1/session/create", {"LockDelay": {}}, 400, "Request decode failed: json: cannot unmarshal object "
     "into Go struct field Session.LockDelay of type time.Duration"),
    ("PUT", "/v1/session/create", {"LockDelay": "soon"}, 400, 'Request decode failed: time: invalid duration "soon"'),
    ("PUT", "/v1/session/create", b"{", 400, None),
    ("PUT", "/v1/session/renew/nope", b"", 404, "Session id 'nope' not found"),
    ("PUT", "/v1/session/renew/", b"", 400, "Missing session"),
    ("PUT", "/v1/session/destroy/", b"", 400, "Missing session"),
    ("GET", "/v1/session/node/", b"", 400, "Missing node name"),
])
def test_bad_input_changes_nothing(method, path, body, status, expected):
    async def scenario(api, leader, clock):
        before = api.ctx.store.index_of("sessions")
        answer = await api.call(method, path, body)
        assert answer.status == status, text(answer)
        if expected is not None:
            assert text(answer) == expected
        assert api.ctx.store.sessions == {} and api.ctx.store.index_of("sessions") == before

    run(scenario)


def test_a_critical_check_refuses_the_session():
    async def scenario(api, leader, clock):
        await api.call("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "127.0.0.1", "Check": CRITICAL_APP})
        answer = await api.call("PUT", "/v1/session/create", {"NodeChecks": ["app"]})
        assert (answer.status, text(answer)) == (500, "Check 'app' is in critical state")

    run(scenario)


def test_destroying_an_unknown_session_is_true():
    async def scenario(api, leader, clock):
        answer = await api.call("PUT", "/v1/session/destroy/nope")
        assert answer.status == 200 and json_body(answer) is True

    run(scenario)


# ------------------------------------------------------------------------------ TTL timers


async def settle(leader: SessionLeader) -> None:
    for _ in range(20):
        leader._wake.set()
        await asyncio.sleep(0.01)


def test_ttl_expires_after_twice_the_ttl_and_renew_resets_it():
    async def scenario(api, leader, clock):
        sid = await create(api, {"TTL": "10s", "Behavior": "delete", "LockDelay": "0s"})
        assert json_body(await api.call("PUT", f"/v1/kv/lead?acquire={sid}", b"me")) is True
        await settle(leader)
        clock.now += 15
        await api.call("PUT", f"/v1/session/renew/{sid}")  # a fresh 2 x TTL from now
        clock.now += 19
        await settle(leader)
        assert await info(api, sid) is not None
        clock.now += 2
        await settle(leader)
        assert await info(api, sid) is None
        assert (await api.call("GET", "/v1/kv/lead")).status == 404  # Behavior delete
        assert (await api.call("PUT", f"/v1/session/renew/{sid}")).status == 404
        assert leader.timers == {}

    run(scenario)


def test_a_new_leader_gives_every_session_a_fresh_ttl():
    async def scenario(api, leader, clock):
        sid = await create(api, {"TTL": "10s"})
        untimed = await create(api)
        await settle(leader)
        assert set(leader.timers) == {sid}
        clock.now += 15
        leader.leading = False  # as if this server had just won an election
        await settle(leader)
        assert leader.timers[sid] == clock.now + 20
        assert untimed not in leader.timers

    run(scenario)


def test_ttl_metrics():
    async def scenario(api, leader, clock):
        sid = await create(api, {"TTL": "10s"})
        await settle(leader)
        clock.now += 21
        await settle(leader)
        assert await info(api, sid) is None
        tel = api.ctx.telemetry  # every retained interval: the samples may straddle a boundary
        names = {name for interval in tel.intervals for name, _ in interval.samples}
        gauges = {name for interval in tel.intervals for name, _ in interval.gauges}
        assert "consul.session.apply" in names and "consul.session_ttl.invalidate" in names
        assert any(name.endswith("session_ttl.active") for name in gauges)

    run(scenario)


# ------------------------------------------------------------------------------ KV locks


def test_acquire_release_and_lock_delay():
    async def scenario(api, leader, clock):
        a, b = await create(api, {"LockDelay": "10s"}), await create(api)
        assert json_body(await api.call("PUT", f"/v1/kv/k?acquire={a}&flags=9", b"1")) is True
        entry = json_body(await api.call("GET", "/v1/kv/k"))[0]
        assert (entry["Session"], entry["LockIndex"], entry["Flags"]) == (a, 1, 9)
        assert json_body(await api.call("PUT", f"/v1/kv/k?acquire={b}", b"2")) is False  # held
        assert json_body(await api.call("PUT", f"/v1/kv/k?release={b}", b"2")) is False  # not the holder
        await api.call("PUT", f"/v1/session/destroy/{a}")  # invalidation: lock-delay 10 s
        entry = json_body(await api.call("GET", "/v1/kv/k"))[0]
        assert "Session" not in entry and entry["LockIndex"] == 1
        assert json_body(await api.call("PUT", f"/v1/kv/k?acquire={b}", b"2")) is False  # in lock-delay
        assert json_body(await api.call("PUT", "/v1/kv/k", b"plain")) is True  # a plain write is not delayed
        clock.now += 10.5
        assert json_body(await api.call("PUT", f"/v1/kv/k?acquire={b}", b"2")) is True
        assert json_body(await api.call("GET", "/v1/kv/k"))[0]["LockIndex"] == 1  # the plain PUT reset it to 0
        assert json_body(await api.call("PUT", f"/v1/kv/k?release={b}")) is True
        entry = json_body(await api.call("GET", "/v1/kv/k"))[0]
        assert entry["Value"] is None and "Session" not in entry  # release replaces the value
        # an explicit release records no lock-delay
        assert json_body(await api.call("PUT", f"/v1/kv/k?acquire={b}", b"3")) is True

    run(scenario)


@pytest.mark.parametrize("query, status, expected", [
    ("acquire=", 500, "missing session"),
    ("acquire=nope", 500, 'invalid session "nope"'),
    ("release=", 500, "missing session"),
    ("release=nope", 200, "false"),
    ("acquire=x&cas=0", 400, "Conflicting flags: acquire=x&cas=0"),
])
def test_lock_bad_input(query, status, expected):
    async def scenario(api, leader, clock):
        answer = await api.call("PUT", f"/v1/kv/k?{query}", b"v")
        assert (answer.status, text(answer).strip()) == (status, expected)
        assert (await api.call("GET", "/v1/kv/k")).status == 404

    run(scenario)


def test_delete_cas_on_a_missing_key_is_true():
    async def scenario(api, leader, clock):
        answer = await api.call("DELETE", "/v1/kv/missing?cas=3")
        assert answer.status == 200 and json_body(answer) is True

    run(scenario)


def test_a_session_bound_to_a_check_dies_with_it_and_releases_its_lock():
    async def scenario(api, leader, clock):
        sid = await create(api, {"NodeChecks": ["app"]})
        await api.call("PUT", f"/v1/kv/svc/leader?acquire={sid}", b"me")
        index = int((await api.call("GET", "/v1/kv/svc/leader")).headers["X-Consul-Index"])
        parked = asyncio.create_task(api.call("GET", f"/v1/kv/svc/?recurse&index={index}&wait=5s"))
        await asyncio.sleep(0.05)
        await api.call("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "127.0.0.1", "Check": CRITICAL_APP})
        woke = await asyncio.wait_for(parked, 5)
        assert "Session" not in json_body(woke)[0] and int(woke.headers["X-Consul-Index"]) > index
        assert await info(api, sid) is None

    run(scenario)
