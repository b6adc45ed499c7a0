"""Sessions, KV locks and transactions in the store (reference/coordination.md §1-§3): every
invalidation path, every lock case, every txn verb's success and failure, applied through the FSM
at increasing indexes as the log does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from appliance.state.fsm import FSM, CommandError
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store


def check(cid: str, status: str = "passing", service_id: str = "", node: str = "n1") -> dict[str, Any]:
    return {"Node": node, "CheckID": cid, "Name": cid, "Status": status, "Notes": "", "Output": "",
            "ServiceID": service_id, "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}}


def svc(sid: str = "web-1", name: str = "web") -> dict[str, Any]:
    return {"ID": sid, "Service": name, "Tags": [], "Address": "", "Meta": {}, "Port": 80,
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Proxy": {}, "Connect": {}}


def register(node: str = "n1", checks: tuple[dict[str, Any], ...] = (), service: dict[str, Any] | None = None):
    return {"Type": "register", "Node": node, "Address": "10.0.0.1", "Datacenter": "dc1",
            "Service": service, "Checks": list(checks)}


def session(sid: str, node: str = "n1", behavior: str = "release", delay_ns: int = 15 * 10**9,
            node_checks: list[str] | None = None, service_checks: list[str] | None = None,
            ttl: str = "") -> dict[str, Any]:
    return {"Type": "session_create", "Session": {
        "ID": sid, "Name": "", "Node": node, "LockDelay": delay_ns, "Behavior": behavior, "TTL": ttl,
        "NodeChecks": node_checks if node_checks is not None else ["serfHealth"],
        "ServiceChecks": [{"ID": c, "Namespace": ""} for c in service_checks] if service_checks else None}}


class Log:
    def __init__(self) -> None:
        self.store = Store()
        self.now = 100.0
        self.fsm = FSM(self.store, clock=lambda: self.now)
        self.index = 0

    def apply(self, cmd: dict[str, Any]) -> Any:
        self.index += 1
        return self.fsm.apply(self.index, cmd).result

    def lock(self, key: str, sid: str, value: bytes | None = b"v", flags: int = 0) -> Any:
        return self.apply({"Type": "kv_lock", "Key": key, "Value": value, "Flags": flags, "Session": sid})

    def unlock(self, key: str, sid: str, value: bytes | None = b"v", flags: int = 0) -> Any:
        return self.apply({"Type": "kv_unlock", "Key": key, "Value": value, "Flags": flags, "Session": sid})

    def put(self, key: str, value: bytes | None, flags: int = 0) -> Any:
        return self.apply({"Type": "kv_set", "Verb": "set", "Key": key, "Value": value, "Flags": flags})

    def txn(self, *ops: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.apply({"Type": "txn", "Ops": list(ops)})
        return result


TABLES = ("nodes", "services", "checks", "kv", "tombstones", "watch_index", "sessions", "session_checks",
          "node_sessions", "session_keys", "lock_released")


def tables(store: Store) -> dict[str, Any]:
    """What a session write may change, but the store's last index."""
    return {name: getattr(store, name) for name in TABLES}


@pytest.fixture
def log() -> Log:
    log = Log()
    log.apply(register(checks=(check("serfHealth"), check("web-check", service_id="web-1")), service=svc()))
    return log


# ------------------------------------------------------------------------------ create


def test_create_stores_the_session_at_its_index(log: Log):
    assert log.apply(session("s1", ttl="15.0s")) == "s1"
    rec = log.store.session("s1")
    assert (rec["Node"], rec["TTL"], rec["CreateIndex"], rec["ModifyIndex"]) == ("n1", "15.0s", 2, 2)
    assert [r["ID"] for r in log.store.sessions_of_node("N1")] == ["s1"]


@pytest.mark.parametrize("cmd, text", [
    (session("s1", node="ghost"), "Missing node registration"),
    (session("s1", node_checks=["nope"]), "Missing check 'nope' registration"),
    (session("s1", service_checks=["nope"]), "Missing check 'nope' registration"),
    (session("s1", behavior="keep"), "Invalid session behavior: keep"),
])
def test_create_refusals_change_nothing(log: Log, cmd: dict[str, Any], text: str):
    before = tables(log.store)
    result = log.apply(cmd)
    assert isinstance(result, CommandError) and str(result) == text
    assert log.store.sessions == {}
    assert tables(log.store) == before


def test_a_critical_check_refuses_the_session_and_warning_does_not(log: Log):
    log.apply(register(checks=(check("serfHealth", "critical"),)))
    assert str(log.apply(session("s1"))) == "Check 'serfHealth' is in critical state"
    log.apply(register(checks=(check("serfHealth", "warning"),)))
    assert log.apply(session("s1")) == "s1"


# ------------------------------------------------------------------------------ invalidation

INVALIDATIONS = {
    "destroy": lambda log: log.apply({"Type": "session_destroy", "ID": "s1"}),
    "check critical": lambda log: log.apply(register(checks=(check("serfHealth", "critical"),))),
    "check deregistered": lambda log: log.apply({"Type": "deregister", "Node": "n1", "CheckID": "serfHealth"}),
    "service check via service deregister": lambda log: log.apply(
        {"Type": "deregister", "Node": "n1", "ServiceID": "web-1"}),
    "node deregistered": lambda log: log.apply({"Type": "deregister", "Node": "n1"}),
    "txn check critical": lambda log: log.txn({"Check": {"Verb": "set", "Check": {
        **check("serfHealth", "critical"), "ModifyIndex": 0}}}),
    "txn node delete": lambda log: log.txn({"Node": {"Verb": "delete", "Node": {"Node": "n1"}}}),
}


@pytest.mark.parametrize("behavior", ["release", "delete"])
@pytest.mark.parametrize("how", sorted(INVALIDATIONS))
def test_every_invalidation_releases_or_deletes_held_keys_at_one_index(log: Log, how: str, behavior: str):
    node_checks = ["serfHealth"] if "service" not in how else []
    log.apply(session("s1", behavior=behavior, node_checks=node_checks,
                      service_checks=["web-check"] if "service" in how else None))
    log.apply(session("s2", node_checks=[]))  # another session, unbound to the check
    assert log.lock("a", "s1") is True and log.lock("b", "s1") is True and log.lock("c", "s2") is True
    INVALIDATIONS[how](log)
    index = log.index
    assert "s1" not in log.store.sessions
    if how != "node deregistered" and how != "txn node delete":
        assert "s2" in log.store.sessions
    for key in ("a", "b"):
        if behavior == "release":
            entry = log.store.kv_get(key)
            assert "Session" not in entry and entry["ModifyIndex"] == index
            assert (entry["Value"], entry["LockIndex"]) == (b"v", 1)
        else:
            assert log.store.kv_get(key) is None and log.store.tombstones[key] == index
        assert log.store.lock_delays[key] == log.now + 15
    assert log.store.index_of("sessions") == index
    assert "s1" not in log.store.session_keys


def test_a_critical_write_invalidates_even_when_the_status_did_not_change(log: Log):
    log.apply(register(checks=(check("serfHealth", "critical"),)))
    log.apply(register(checks=(check("serfHealth", "passing"),)))
    log.apply(session("s1"))
    log.apply(register(checks=(check("serfHealth", "warning"),)))
    assert "s1" in log.store.sessions  # warning is not a trigger
    log.apply(register(checks=(check("serfHealth", "critical"),)))
    assert "s1" not in log.store.sessions


def test_lock_delay_is_capped_at_60s_and_zero_records_none(log: Log):
    log.apply(session("long", delay_ns=600 * 10**9, node_checks=[]))
    log.apply(session("none", delay_ns=0, node_checks=[]))
    log.lock("x", "long"), log.lock("y", "none")
    log.apply({"Type": "session_destroy", "ID": "long"})
    log.apply({"Type": "session_destroy", "ID": "none"})
    assert log.store.lock_delays == {"x": log.now + 60}


def test_destroying_an_unknown_session_is_a_no_op(log: Log):
    assert log.apply({"Type": "session_destroy", "ID": "nope"}) is True


def test_sessions_survive_a_snapshot_with_their_indexes(log: Log):
    log.apply(session("s1", service_checks=["web-check"]))
    log.lock("k", "s1")
    restored = restore(snapshot(log.store))
    assert restored.sessions == log.store.sessions
    assert restored.session_keys == {"s1": {"k"}}
    assert restored.session_checks == log.store.session_checks
    fsm = FSM(restored)
    fsm.apply(log.index + 1, {"Type": "deregister", "Node": "n1", "CheckID": "web-check"})
    assert restored.sessions == {} and "Session" not in restored.kv_get("k")


# ------------------------------------------------------------------------------ KV locks


def test_lock_cases(log: Log):
    log.apply(session("s1", node_checks=[]))
    log.apply(session("s2", node_checks=[]))
    assert log.lock("k", "s1", b"one", 7) is True
    e = log.store.kv_get("k")
    assert (e["LockIndex"], e["Session"], e["Value"], e["Flags"]) == (1, "s1", b"one", 7)
    assert log.lock("k", "s2") is False  # held by another session
    assert log.lock("k", "s1", b"again", 8) is True  # re-acquire: value and flags replaced, same epoch
    e = log.store.kv_get("k")
    assert (e["LockIndex"], e["Value"], e["Flags"]) == (1, b"again", 8)
    assert log.unlock("k", "s2") is False  # not the holder
    assert log.unlock("k", "s1", None) is True  # value replaced by the (empty) body, LockIndex kept
    e = log.store.kv_get("k")
    assert ("Session" in e, e["Value"], e["LockIndex"], e["Flags"]) == (False, None, 1, 0)
    assert log.lock("k", "s2") is True
    assert log.store.kv_get("k")["LockIndex"] == 2  # a new epoch
    assert log.unlock("missing", "s1") is False


def test_lock_errors_are_consul_texts(log: Log):
    assert str(log.lock("k", "")) == "missing session"
    assert str(log.lock("k", "nope")) == 'invalid session "nope"'
    assert str(log.unlock("k", "")) == "missing session"
    assert log.store.kv_get("k") is None


def test_a_plain_put_keeps_the_holder_and_resets_lock_index(log: Log):
    log.apply(session("s1", node_checks=[]))
    log.lock("k", "s1")
    log.put("k", b"w")
    e = log.store.kv_get("k")
    assert (e["Session"], e["LockIndex"], e["Value"]) == ("s1", 0, b"w")


def test_an_identical_write_keeps_modify_index(log: Log):
    log.put("k", b"same", 3)
    first = log.store.kv_get("k")["ModifyIndex"]
    log.put("k", b"same", 3)
    assert log.store.kv_get("k")["ModifyIndex"] == first
    log.put("k", b"same", 4)
    assert log.store.kv_get("k")["ModifyIndex"] == log.index


def test_delete_cas_on_a_missing_key_succeeds(log: Log):
    assert log.apply({"Type": "kv_delete", "Key": "nope", "Index": 5}) is True
    log.put("k", b"v")
    assert log.apply({"Type": "kv_delete", "Key": "k", "Index": 1}) is False
    assert log.apply({"Type": "kv_delete", "Key": "k", "Index": log.store.kv_get("k")["ModifyIndex"]}) is True


def test_a_deleted_locked_key_no_longer_counts_as_held(log: Log):
    log.apply(session("s1", node_checks=[]))
    log.lock("k", "s1")
    log.apply({"Type": "kv_delete", "Key": "k"})
    assert "s1" not in log.store.session_keys
    log.apply({"Type": "session_destroy", "ID": "s1"})
    assert log.store.kv_get("k") is None and "k" not in log.store.lock_delays


def test_a_lock_checked_before_the_invalidation_applied_is_refused(log: Log):
    # the leader checked lock-delays at applied index `Checked`; an invalidation already in the
    # log after that index started a lock-delay the check could not see (Consul has this gap)
    log.apply(session("s1", node_checks=[]))
    log.apply(session("s2", node_checks=[]))
    log.lock("k", "s1")
    checked = log.index
    log.apply({"Type": "session_destroy", "ID": "s1"})
    lock = {"Type": "kv_lock", "Key": "k", "Value": None, "Flags": 0, "Session": "s2"}
    assert log.apply({**lock, "Checked": checked}) is False
    result = log.apply({"Type": "txn", "Ops": [{"KV": {"Verb": "lock", "Key": "k", "Session": "s2"}}],
                        "Checked": checked})
    assert result["Errors"] == [{"OpIndex": 0, "What": 'failed to lock key "k" due to lock delay'}]
    assert log.store.kv_get("k").get("Session") is None
    assert log.apply({**lock, "Checked": log.index}) is True  # checked after the invalidation applied
    assert log.store.lock_released == {}


KV_OPS = st.lists(st.tuples(
    st.sampled_from(["set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas", "get-tree",
                     "check-not-exists"]),
    st.sampled_from(["a", "a/b", "a/c", "b", "", "new"]),
    st.sampled_from(["s1", "s2"]),
    st.integers(0, 12)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(ops=KV_OPS)
def test_a_failed_kv_transaction_leaves_the_store_exactly_as_it_was(ops):
    log = Log()
    log.apply(register())
    log.apply(session("s1", node_checks=[]))
    log.apply(session("s2", node_checks=[], delay_ns=0))
    log.put("a", b"1"), log.put("a/b", b"2"), log.lock("a/c", "s1"), log.lock("b", "s2")
    log.apply({"Type": "kv_delete", "Key": "gone"})
    log.put("gone", b"x"), log.apply({"Type": "kv_delete", "Key": "gone"})
    before = {name: copy.deepcopy(getattr(log.store, name)) for name in (*TABLES, "kv_keys")}
    txn_ops = [{"KV": {"Verb": verb, "Key": key, "Session": sid, "Index": idx, "Value": b"v"}}
               for verb, key, sid, idx in ops]
    result = log.txn(*txn_ops, {"KV": {"Verb": "get", "Key": "missing"}})
    assert result["Results"] is None
    assert {name: getattr(log.store, name) for name in (*TABLES, "kv_keys")} == before


def test_old_releases_and_ended_lock_delays_are_forgotten(log: Log):
    from appliance.state import sessions as state_sessions

    for i in range(state_sessions.KEEP_DELAYS + 1):
        log.apply(session(f"s{i}", node_checks=[], behavior="delete"))
        log.lock(f"c/{i}", f"s{i}")
        log.apply({"Type": "session_destroy", "ID": f"s{i}"})
    assert len(log.store.lock_released) == state_sessions.KEEP_DELAYS + 1  # all recent
    log.index += state_sessions.RELEASED_HORIZON
    log.now += 61
    log.apply(session("last", node_checks=[]))
    log.lock("c/last", "last")
    log.apply({"Type": "session_destroy", "ID": "last"})
    assert list(log.store.lock_released) == ["c/last"]
    assert list(log.store.lock_delays) == ["c/last"]


@pytest.mark.parametrize("status, survives", [("failed", False), ("left", False), ("alive", True)])
def test_gossip_failure_and_leave_reach_sessions_through_the_leaders_reconciliation(status, survives):
    # coordination.md §1.3: a node failing in gossip invalidates the sessions bound to serfHealth
    # (the leader writes serfHealth critical); leaving deregisters the node, which ends them all
    from appliance.gossip.serf import Member, MemberStatus
    from appliance.reconcile import plan_member

    log = Log()
    member = Member("n2", "10.0.0.2", 8301, {"role": "node", "dc": "dc1"}, MemberStatus.ALIVE)
    for cmd in plan_member(log.store, member, datacenter="dc1", self_name="s0", version="1.17.0"):
        log.apply(cmd)
    log.apply(session("bound", node="n2"))  # NodeChecks ["serfHealth"]
    log.apply(session("ttl-only", node="n2", node_checks=[]))
    log.lock("k", "bound")
    member.status = {"failed": MemberStatus.FAILED, "left": MemberStatus.LEFT, "alive": MemberStatus.ALIVE}[status]
    for cmd in plan_member(log.store, member, datacenter="dc1", self_name="s0", version="1.17.0"):
        log.apply(cmd)
    assert ("bound" in log.store.sessions) is survives
    assert ("ttl-only" in log.store.sessions) is (status != "left")  # a serf flap never ends it
    assert ("Session" in log.store.kv_get("k")) is survives
