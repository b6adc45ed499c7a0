"""The leader's member reconciliation plans (appliance/reconcile.py), on a real store and FSM.

Consul's leader.go rules: an alive member gets its node and a passing `serfHealth` ("Agent alive
and reachable"), servers also the `consul` service; a failed member's `serfHealth` goes critical
("Agent not live or unreachable"); a left or reaped member is deregistered, never the leader
itself; a catalog that already agrees needs no command (the periodic pass costs nothing).
"""

from __future__ import annotations

from appliance.gossip.serf import Member, MemberStatus
from appliance.reconcile import plan_deregister, plan_member, plan_reaped
from appliance.state.fsm import FSM
from appliance.state.store import Store

SERVER_TAGS = {"role": "consul", "dc": "dc1", "id": "11111111-2222-3333-4444-555555555555", "port": "8300",
               "raft_vsn": "3", "build": "1.17.0:cairn"}
CLIENT_TAGS = {"role": "node", "dc": "dc1", "id": "aaaaaaaa-2222-3333-4444-555555555555"}


class Catalog:
    def __init__(self) -> None:
        self.store = Store()
        self.fsm = FSM(self.store)
        self.index = 0

    def apply(self, commands: list[dict]) -> None:
        for cmd in commands:
            self.index += 1
            result = self.fsm.apply(self.index, cmd).result
            assert not isinstance(result, Exception), result

    def plan(self, member: Member) -> list[dict]:
        return plan_member(self.store, member, datacenter="dc1", self_name="s1", version="1.17.0")

    def serf_health(self, node: str) -> dict | None:
        return next((c for c in self.store.node_checks(node) if c["CheckID"] == "serfHealth"), None)


def member(name: str, status: MemberStatus, tags: dict, addr: str = "10.0.0.2") -> Member:
    return Member(name, addr, 8301, dict(tags), status)


def test_alive_member_is_registered_with_passing_serf_health_once():
    cat = Catalog()
    c1 = member("c1", MemberStatus.ALIVE, CLIENT_TAGS)
    plan = cat.plan(c1)
    assert len(plan) == 1 and plan[0]["Address"] == "10.0.0.2" and plan[0]["ID"] == CLIENT_TAGS["id"]
    assert "Service" not in plan[0]
    cat.apply(plan)
    check = cat.serf_health("c1")
    assert (check["Status"], check["Output"], check["Name"]) == ("passing", "Agent alive and reachable",
                                                                 "Serf Health Status")
    assert cat.plan(c1) == []  # already agrees: no log entry


def test_server_member_gets_the_consul_service_and_keeps_its_own_node_info():
    cat = Catalog()
    cat.apply([{"Type": "register", "Node": "s2", "Address": "10.0.0.3", "Datacenter": "dc1",
                "TaggedAddresses": {"lan": "10.0.0.3", "wan": "198.51.100.3"}, "NodeMeta": {"rack": "r1"}}])
    s2 = member("s2", MemberStatus.ALIVE, SERVER_TAGS, addr="10.0.0.3")
    plan = cat.plan(s2)
    assert plan[0]["SkipNodeUpdate"] is True and plan[0]["Service"]["Service"] == "consul"
    assert plan[0]["Service"]["Port"] == 8300
    cat.apply(plan)
    node = cat.store.node("s2")
    assert node["Meta"] == {"rack": "r1"} and node["TaggedAddresses"]["wan"] == "198.51.100.3"
    assert [s["Service"] for s in cat.store.node_services("s2")] == ["consul"]
    assert cat.plan(s2) == []


def test_failed_member_goes_critical_and_back_to_passing():
    cat = Catalog()
    cat.apply(cat.plan(member("c1", MemberStatus.ALIVE, CLIENT_TAGS)))
    failed = member("c1", MemberStatus.FAILED, CLIENT_TAGS)
    plan = cat.plan(failed)
    cat.apply(plan)
    check = cat.serf_health("c1")
    assert (check["Status"], check["Output"]) == ("critical", "Agent not live or unreachable")
    assert cat.plan(failed) == []
    cat.apply(cat.plan(member("c1", MemberStatus.ALIVE, CLIENT_TAGS)))  # it came back
    assert cat.serf_health("c1")["Status"] == "passing"
    # a failed member the catalog never had is left alone
    assert cat.plan(member("ghost", MemberStatus.FAILED, CLIENT_TAGS)) == []


def test_left_member_is_deregistered_but_never_the_leader_itself():
    cat = Catalog()
    cat.apply(cat.plan(member("c1", MemberStatus.ALIVE, CLIENT_TAGS)))
    cat.apply(cat.plan(member("s1", MemberStatus.ALIVE, SERVER_TAGS, addr="10.0.0.1")))
    assert cat.plan(member("c1", MemberStatus.LEAVING, CLIENT_TAGS)) == []  # not decided yet
    cat.apply(cat.plan(member("c1", MemberStatus.LEFT, CLIENT_TAGS)))
    assert cat.store.node("c1") is None
    assert plan_deregister(cat.store, "s1", "s1") == []
    assert cat.plan(member("s1", MemberStatus.LEFT, SERVER_TAGS)) == []


def test_reaped_nodes_and_other_datacenters():
    cat = Catalog()
    cat.apply(cat.plan(member("c1", MemberStatus.ALIVE, CLIENT_TAGS)))
    cat.apply(cat.plan(member("c2", MemberStatus.ALIVE, CLIENT_TAGS)))
    cat.apply([{"Type": "register", "Node": "external", "Address": "192.0.2.9", "Datacenter": "dc1"}])
    # c2 is no gossip member any more; `external` has no serfHealth, so it is not ours to remove
    assert plan_reaped(cat.store, ["c1", "s1"], "s1") == ["c2"]
    assert cat.plan(member("x", MemberStatus.ALIVE, {**CLIENT_TAGS, "dc": "dc2"})) == []
