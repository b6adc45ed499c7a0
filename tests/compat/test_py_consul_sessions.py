"""The unmodified PyPI client py-consul against a real `cairn agent -dev`: sessions (create with
checks and a TTL, renew, info, node, list, destroy), KV acquire and release, and transactions.

py-consul sends lower-case keys for a session (`name`, `checks`, `lockdelay`, `behavior`,
`ttl`), the shape Patroni uses; its `renew` raises NotFound on a 404 and its `kv.put` raises on
Consul's 500 texts, so the statuses are checked through the client's own reactions.
"""

from __future__ import annotations

import base64

import consul
import pytest
from conftest import AgentProcess, http, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def c(agent: AgentProcess) -> consul.Consul:
    client = consul.Consul(host="127.0.0.1", port=agent.http_port)

    def serf_health() -> bool:
        _, checks = client.health.node("test-node")
        return any(chk["CheckID"] == "serfHealth" for chk in checks)

    wait_until(serf_health, timeout=15)
    return client


def test_session_lifecycle(c: consul.Consul) -> None:
    sid = c.session.create(name="pg1", ttl=20, lock_delay=0, behavior="delete", checks=[])
    index, rec = c.session.info(sid)
    assert int(index) >= 1
    assert (rec["Name"], rec["Node"], rec["TTL"], rec["Behavior"], rec["LockDelay"], rec["NodeChecks"]) == (
        "pg1", "test-node", "20s", "delete", 0, [])
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid and renewed["TTL"] == "20s"

    default = c.session.create()  # bound to serfHealth, release, 15 s lock-delay
    _, rec = c.session.info(default)
    assert (rec["NodeChecks"], rec["Behavior"], rec["LockDelay"]) == (["serfHealth"], "release", 15_000_000_000)

    _, listed = c.session.list()
    assert sorted(s["ID"] for s in listed) == sorted([sid, default])
    _, on_node = c.session.node("test-node")
    assert len(on_node) == 2

    assert c.session.destroy(sid) is True
    _, rec = c.session.info(sid)
    assert rec is None
    with pytest.raises(consul.NotFound):
        c.session.renew(sid)


def test_session_bad_ttl_is_consuls_500(c: consul.Consul, agent: AgentProcess) -> None:
    # py-consul itself refuses ttl < 10; Patroni splices its own "ttl" into the body, as here
    status, _, body = http("PUT", f"{agent.url}/v1/session/create", b'{"checks": [], "ttl": "5.0s"}')
    assert (status, body) == (500, b"Invalid Session TTL '5000000000', must be between [10s=24h0m0s]")
    _, listed = c.session.list()
    assert listed == []


def test_kv_acquire_and_release(c: consul.Consul) -> None:
    a = c.session.create(checks=[], lock_delay=0)
    b = c.session.create(checks=[])
    assert c.kv.put("service/batman/leader", "pg1", acquire=a) is True
    assert c.kv.put("service/batman/leader", "pg2", acquire=b) is False
    _, entry = c.kv.get("service/batman/leader")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (a, 1, b"pg1")
    assert c.kv.put("service/batman/leader", "pg1", release=b) is False
    assert c.kv.put("service/batman/leader", "pg1", release=a) is True
    _, entry = c.kv.get("service/batman/leader")
    assert "Session" not in entry and entry["LockIndex"] == 1
    with pytest.raises(consul.ConsulException, match="invalid session"):
        c.kv.put("service/batman/leader", "x", acquire="00000000-0000-0000-0000-000000000000")
    # the holder's session destroyed: its keys are released (Behavior release)
    assert c.kv.put("service/batman/members/pg2", "m", acquire=b) is True
    c.session.destroy(b)
    _, entry = c.kv.get("service/batman/members/pg2")
    assert "Session" not in entry


def test_txn_with_several_verbs(c: consul.Consul) -> None:
    sid = c.session.create(checks=[])
    value = base64.b64encode(b"v1").decode()
    result = c.txn.put([
        {"KV": {"Verb": "set", "Key": "app/config", "Value": value}},
        {"KV": {"Verb": "lock", "Key": "app/leader", "Value": value, "Session": sid}},
        {"KV": {"Verb": "get", "Key": "app/config"}},
        {"KV": {"Verb": "check-session", "Key": "app/leader", "Session": sid}},
    ])
    assert result["Errors"] is None
    assert [r["KV"]["Key"] for r in result["Results"]] == ["app/config", "app/leader", "app/config", "app/leader"]
    assert result["Results"][2]["KV"]["Value"] == value
    modify = result["Results"][0]["KV"]["ModifyIndex"]
    with pytest.raises(consul.ConsulException):  # 409: py-consul raises on anything but 200
        c.txn.put([{"KV": {"Verb": "cas", "Key": "app/config", "Value": value, "Index": modify + 100}},
                   {"KV": {"Verb": "delete", "Key": "app/leader"}}])
    _, entry = c.kv.get("app/leader")
    assert entry["Session"] == sid  # nothing of the failed transaction was applied
