"""The FSM's command definitions (appliance/state/commands.py) and an FSM that never raises.

What is checked: every command type accepts what the real producers write (the catalog endpoint,
anti-entropy, the leader's reconciliation, the coordinate batcher, autopilot, snapshot restore)
and refuses a field of the wrong type with a text naming the command and the field; FSM.apply on
poison commands (a non-string Node, a bool Node, a list CheckID, garbage bytes, an unknown type)
returns an error result, leaves the store as it was and applies the next good entry; a handler
that fails mid-way leaves a usable store; the codec round-trips strings holding lone surrogates
(KV keys that are not UTF-8); and the Raft driver refuses an invalid command before it enters
the log and survives an entry it cannot apply.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from typing import Any

import msgpack
import pytest

from appliance.client.replica import Replica
from appliance.client.servers import ServerList
from appliance.gossip.coordinate import Coordinate
from appliance.gossip.serf import Member, MemberStatus
from appliance.local.definitions import parse_service_definition
from appliance.local.state import LocalState
from appliance.local.sync import plan_sync
from appliance.raft.autopilot import AutopilotConfig
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    InitialState,
    Server,
    bootstrap_state,
)
from appliance.raft.metrics import RaftMetrics
from appliance.reconcile import plan_member
from appliance.state.commands import (
    COMMANDS,
    CommandError,
    InvalidCommand,
    UndecodableCommand,
    decode_command,
    encode_command,
    validate,
)
from appliance.state.fsm import FSM, ApplyFailed
from appliance.state.snapshot import snapshot
from appliance.state.store import Store

NODE_INFO = {"Node": "n1", "ID": "id-1", "Address": "10.0.0.1", "Datacenter": "dc1",
             "TaggedAddresses": {"lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "wan": "10.0.0.1",
                                 "wan_ipv4": "10.0.0.1"},
             "NodeMeta": {"consul-network-segment": "", "consul-version": "1.17.0"}}


def service(sid: str = "web-1", name: str = "web") -> dict[str, Any]:
    return {"ID": sid, "Service": name, "Tags": ["v1"], "Address": "", "Meta": {}, "Port": 80,
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {}, "PeerName": ""}


def check(cid: str = "c1", service_id: str = "") -> dict[str, Any]:
    return {"Node": "n1", "CheckID": cid, "Name": cid, "Status": "passing", "Notes": "", "Output": "",
            "ServiceID": service_id, "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}}


REGISTER = {"Type": "register", **NODE_INFO, "SkipNodeUpdate": False, "Service": service(),
            "Checks": [check("c1", "web-1"), check("node-ok")]}


# ------------------------------------------------------------------ what the producers write


def producer_commands() -> list[dict[str, Any]]:
    """One or more commands of every type, as the agent's own code builds them."""
    out: list[dict[str, Any]] = [copy.deepcopy(REGISTER)]
    store = Store()
    # anti-entropy (appliance/local/sync.py): node info, a service with a TTL check, a node check
    local = LocalState("n1", "dc1")
    local.add_service(parse_service_definition({
        "Name": "api", "ID": "api-1", "Port": 8080, "Tags": ["a", "b"], "Meta": {"team": "x"},
        "Address": "10.0.0.9", "TaggedAddresses": {"lan": {"Address": "10.0.0.9", "Port": 8080}},
        "Check": {"TTL": "10s"}, "Weights": {"Passing": 3, "Warning": 1}}))
    out += [cmd for _, cmd in plan_sync(store, NODE_INFO, local)]
    # the leader's reconciliation (appliance/reconcile.py): a server member, alive, then failed
    member = Member("s1", "10.0.0.2", 8301, {"role": "consul", "dc": "dc1", "port": "8300", "id": "x"},
                    MemberStatus.ALIVE)
    out += plan_member(store, member, datacenter="dc1", self_name="s0", version="1.17.0")
    out += [{"Type": "deregister", "Node": "s1"}, {"Type": "deregister", "Node": "n1", "ServiceID": "api-1"},
            {"Type": "deregister", "Node": "n1", "ServiceID": "", "CheckID": "node-ok"}]
    # KV (appliance/http/handlers/kv.py)
    out += [{"Type": "kv_set", "Verb": "set", "Key": "a/b", "Flags": 0, "Value": b"1"},
            {"Type": "kv_set", "Verb": "set", "Key": "a/empty", "Flags": 42, "Value": None},
            {"Type": "kv_set", "Verb": "cas", "Key": "a/b", "Flags": 0, "Value": b"2", "Index": 0},
            {"Type": "kv_delete", "Key": "a/", "Recurse": True},
            {"Type": "kv_delete", "Key": "a/b", "Recurse": False, "Index": 7}]
    # locks (kv.py), sessions (appliance/http/handlers/session.py), transactions (txn.py)
    from appliance.http.handlers.session import session_command
    from appliance.queries.definition import record as query_record

    out += [{"Type": "kv_lock", "Key": "a/l", "Flags": 3, "Value": b"1", "Session": "s-1"},
            {"Type": "kv_unlock", "Key": "a/l", "Flags": 0, "Value": None, "Session": "s-1"},
            session_command({"name": "n", "ttl": "15.0s", "lockdelay": "0.001s", "behavior": "delete",
                             "checks": []}, "n1", "s-1", 10 * 10**9),
            session_command({"ServiceChecks": [{"ID": "c1"}], "Checks": ["a", "b"]}, "n1", "s-2", 10 * 10**9),
            {"Type": "session_destroy", "ID": "s-1"},
            # prepared queries (appliance/http/handlers/query.py)
            {"Type": "prepared_query", "Op": "set", "Query": {**query_record({"Name": "q", "Service": {
                "Service": "web", "Tags": ["a", "!b"], "NodeMeta": {"k": "v"}}}), "ID": "q-1"}},
            {"Type": "prepared_query", "Op": "delete", "ID": "q-1"},
            {"Type": "txn", "Ops": [
                {"KV": {"Verb": "set", "Key": "t", "Value": b"v", "Flags": 1}},
                {"KV": {"Verb": "check-session", "Key": "t", "Value": None, "Session": ""}},
                {"Node": {"Verb": "set", "Node": {"Node": "n9", "Address": "10.0.0.9", "Datacenter": "dc1",
                                                  "ModifyIndex": 0}}},
                {"Service": {"Verb": "set", "Node": "n9", "Service": {**service(), "ModifyIndex": 0}}},
                {"Check": {"Verb": "delete", "Check": {"Node": "n9", "CheckID": "c1", "ModifyIndex": 0}}}]}]
    # ACL objects (appliance/http/handlers/acl.py, the leader's ACL start-up and token reaping)
    acl_token = {"AccessorID": "6a1253d2-1785-24fd-91c2-f8e78c745511", "SecretID": "anonymous-x",
                 "Description": "", "Local": False, "CreateTime": "2024-05-01T11:00:00Z",
                 "Policies": [{"ID": "00000000-0000-0000-0000-000000000001"}]}
    out += [{"Type": "acl", "Op": "init"},
            {"Type": "acl", "Op": "token_set", "Object": acl_token, "Create": True},
            {"Type": "acl", "Op": "policy_set", "Object": {"ID": "p-1", "Name": "p", "Description": "",
                                                           "Rules": "", "Datacenters": ["dc1"]}},
            {"Type": "acl", "Op": "policy_delete", "ID": "p-1"},
            {"Type": "acl", "Op": "tokens_delete", "IDs": [acl_token["AccessorID"]]}]
    # the Connect CA (appliance/connect/authority.py, handlers/connect_ca.py) and config entries
    from appliance.connect import authority

    init = authority.bootstrap({}, "7f42f496-fbc7-8692-05ed-334aa5340c1e", 1, 1_700_000_000.0, "abcdefgh")
    out += [{"Type": "connect_ca", "Op": "serial"}, init,
            {"Type": "connect_ca", "Op": "set", "Config": init["Config"], "CAS": 5},
            {"Type": "connect_ca", "Op": "prune", "IDs": [init["Roots"][0]["ID"]]},
            {"Type": "config_entry", "Op": "set", "Kind": "service-defaults", "Name": "web",
             "Entry": {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}, "CAS": 0},
            {"Type": "config_entry", "Op": "delete", "Kind": "service-defaults", "Name": "web"}]
    # autopilot (HTTP handler and driver_autopilot.py), coordinates (coordinates.py), restore
    config = AutopilotConfig().to_api()
    out += [{"Type": "autopilot", "Init": True, "Config": config},
            {"Type": "autopilot", "Config": config, "CAS": 3},
            {"Type": "coordinate_batch_update",
             "Updates": [{"Node": "n1", "Segment": "", "Coord": Coordinate.origin().to_json()}]},
            {"Type": "restore", "State": snapshot(Store())}]
    return out


def test_every_command_type_has_a_producer_here():
    assert {cmd["Type"] for cmd in producer_commands()} == set(COMMANDS)


@pytest.mark.parametrize("command", producer_commands(), ids=lambda c: c["Type"])
def test_what_the_producers_write_validates_and_survives_the_codec(command):
    assert validate(command) == command["Type"]
    assert decode_command(encode_command(command)) == command
    assert validate(decode_command(encode_command(command))) == command["Type"]


def test_the_catalog_endpoints_commands_validate():
    # reference/consul-api.md §4.2: a full catalog register body with a service and a check definition
    from appliance.http.handlers.catalog import register_command

    body = {"Node": "ext", "Address": "192.0.2.1", "NodeMeta": {"k": "v"}, "TaggedAddresses": {"wan": "198.51.100.1"},
            "Service": {"ID": "redis1", "Service": "redis", "Tags": ["primary"], "Port": 8000,
                        "Meta": {"redis_version": "4.0"}, "Address": "127.0.0.1",
                        "TaggedAddresses": {"lan": {"Address": "127.0.0.1", "Port": 8000}}},
            "Check": {"Node": "ext", "CheckID": "service:redis1", "Name": "Redis health check", "Status": "passing",
                      "ServiceID": "redis1",
                      "Definition": {"HTTP": "http://192.0.2.1:8000/health", "Header": {"X": ["a", "b"]},
                                     "Interval": "5s", "Timeout": "1s", "TLSSkipVerify": True}}}
    command = register_command(body, "dc1")
    assert validate(command) == "register"
    applied = FSM(Store()).apply(1, command)
    assert applied.result is True and not applied.failed


# ------------------------------------------------------------------ what is refused, and the text


def _with(path: list[Any], value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    cmd = copy.deepcopy(base or REGISTER)
    target = cmd
    for step in path[:-1]:
        target = target[step]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return cmd


_DROP = object()
KV = {"Type": "kv_set", "Verb": "set", "Key": "k", "Flags": 0, "Value": b"v"}
COORD = {"Type": "coordinate_batch_update", "Updates": [{"Node": "n1", "Segment": "", "Coord": {
    "Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5}}]}

REFUSED = [
    # (command, the text's start)
    (_with(["Node"], 123), "invalid register command: Node must be a non-empty string, not an integer"),
    (_with(["Node"], True), "invalid register command: Node must be a non-empty string, not a boolean"),
    (_with(["Node"], ""), "invalid register command: Node must be a non-empty string, not an empty string"),
    (_with(["Node"], _DROP), "invalid register command: Node is missing"),
    (_with(["Address"], 1), "invalid register command: Address must be a string, not an integer"),
    (_with(["SkipNodeUpdate"], "yes"), "invalid register command: SkipNodeUpdate must be a boolean"),
    (_with(["NodeMeta"], {"a": 1}), "invalid register command: NodeMeta must be a map of strings or null"),
    (_with(["TaggedAddresses"], ["x"]), "invalid register command: TaggedAddresses must be a map of strings"),
    (_with(["Bogus"], 1), "invalid register command: Bogus is not a field of register"),
    (_with(["Service"], "web"), "invalid register command: Service must be a map (NodeService) or null"),
    (_with(["Service", "ID"], 7), "invalid register command: Service.ID must be a string, not an integer"),
    (_with(["Service", "Service"], ""), "invalid register command: Service.Service must be a non-empty string"),
    (_with(["Service", "Port"], "80"), "invalid register command: Service.Port must be an integer, not a string"),
    (_with(["Service", "Port"], True), "invalid register command: Service.Port must be an integer, not a boolean"),
    (_with(["Service", "Tags"], ["a", 1]), "invalid register command: Service.Tags must be a list of strings"),
    (_with(["Service", "Weights", "Passing"], "1"),
     "invalid register command: Service.Weights.Passing must be an integer, not a string"),
    (_with(["Service", "TaggedAddresses"], {"lan": {"Address": "x", "Port": "1"}}),
     "invalid register command: Service.TaggedAddresses['lan'].Port must be an integer"),
    (_with(["Service", "Proxy"], {"Mode": b"x"}), "invalid register command: Service.Proxy must be a map of JSON"),
    (_with(["Service", "Meta"], _DROP), "invalid register command: Service.Meta is missing"),
    (_with(["Checks"], {"c": 1}), "invalid register command: Checks must be a list of maps (HealthCheck)"),
    (_with(["Checks", 0, "CheckID"], ["x"]),
     "invalid register command: Checks[0].CheckID must be a non-empty string, not a list"),
    (_with(["Checks", 1, "ServiceName"], _DROP), "invalid register command: Checks[1].ServiceName is missing"),
    (_with(["Checks", 1, "ExposedPort"], 1.5), "invalid register command: Checks[1].ExposedPort must be an integer"),
    (_with(["Checks", 1], "c"), "invalid register command: Checks[1] must be a map (HealthCheck), not a string"),
    ({"Type": "deregister", "Node": True}, "invalid deregister command: Node must be a non-empty string"),
    ({"Type": "deregister", "Node": "n1", "ServiceID": 3}, "invalid deregister command: ServiceID must be a string"),
    (_with(["Key"], None, KV), "invalid kv_set command: Key must be a string, not null"),
    (_with(["Flags"], -1, KV), "invalid kv_set command: Flags must be an unsigned 64-bit integer, not -1"),
    (_with(["Value"], 5, KV), "invalid kv_set command: Value must be bytes or null, not an integer"),
    (_with(["Verb"], "cas", KV), 'invalid kv_set command: Index is missing (Verb "cas")'),
    (_with(["Verb"], "swap", KV), "invalid kv_set command: Verb must be \"set\" or \"cas\", not 'swap'"),
    ({"Type": "kv_delete", "Key": "k", "Recurse": 1}, "invalid kv_delete command: Recurse must be a boolean"),
    ({"Type": "kv_delete", "Key": "k", "Index": "3"}, "invalid kv_delete command: Index must be an unsigned"),
    ({"Type": "autopilot", "Config": {"MinQuorum": "3"}},
     "invalid autopilot command: Config.MinQuorum must be an integer, not a string"),
    ({"Type": "autopilot", "Config": {"Bogus": 1}}, "invalid autopilot command: Config.Bogus is not a field"),
    ({"Type": "autopilot"}, "invalid autopilot command: Config is missing"),
    ({"Type": "autopilot", "Config": {}, "CAS": True}, "invalid autopilot command: CAS must be an unsigned"),
    (_with(["Updates", 0, "Coord", "Vec"], [0.0, float("nan")], COORD),
     "invalid coordinate_batch_update command: Updates[0].Coord.Vec must be a list of finite numbers"),
    (_with(["Updates", 0, "Node"], 5, COORD),
     "invalid coordinate_batch_update command: Updates[0].Node must be a string, not an integer"),
    (_with(["Updates"], "all", COORD), "invalid coordinate_batch_update command: Updates must be a list of maps"),
    ({"Type": "restore", "State": "x"}, "invalid restore command: State must be bytes, not a string"),
    ({"Type": "restore"}, "invalid restore command: State is missing"),
    ({"Type": "no_such_command"}, "unknown command type 'no_such_command'"),
    ({"Type": ["register"]}, "unknown command type ['register']"),
    ({"Node": "n1"}, "unknown command type None"),
    (["register"], "invalid unknown command: a command must be a map, not a list"),
]


@pytest.mark.parametrize("command, text", REFUSED, ids=[t for _, t in REFUSED])
def test_a_wrong_field_is_refused_naming_the_command_and_the_field(command, text):
    with pytest.raises(InvalidCommand) as err:
        validate(command)
    assert str(err.value).startswith(text), str(err.value)
    assert isinstance(err.value, CommandError)  # the HTTP layer answers 500 with the text


def test_the_error_names_its_field():
    with pytest.raises(InvalidCommand) as err:
        validate(_with(["Checks", 0, "CheckID"], ["x"]))
    assert (err.value.command_type, err.value.field) == ("register", "Checks[0].CheckID")


def test_validation_is_cheap():
    # it runs on every write (twice on the leader): a register with a service and two checks
    import timeit

    command = copy.deepcopy(REGISTER)
    best = min(timeit.repeat(lambda: validate(command), number=2000, repeat=5)) / 2000
    assert best < 50e-6  # about 5 µs on a loaded 2-core machine; generous against CI noise


# ------------------------------------------------------------------ the codec


def test_codec_round_trips_lone_surrogates():
    raw_key = b"bin/\xff\xfe/\xc3(/ok"  # not UTF-8: kept as lone surrogates (surrogateescape)
    key = raw_key.decode("utf-8", "surrogateescape")
    command = {"Type": "kv_set", "Verb": "set", "Key": key, "Flags": 0, "Value": b"\x00\xff"}
    data = encode_command(command)
    assert raw_key in data  # the key's own bytes are what the log holds
    assert decode_command(data) == command
    assert decode_command(data)["Key"].encode("utf-8", "surrogateescape") == raw_key
    fsm = FSM(Store())
    assert fsm.apply_entry(1, data).result is True
    assert fsm.store.kv_get(key)["Value"] == b"\x00\xff"


def test_codec_refuses_what_it_cannot_carry():
    with pytest.raises(InvalidCommand, match="invalid kv_set command: cannot be encoded"):
        encode_command({"Type": "kv_set", "Key": "\ud800", "Value": None})  # not from surrogateescape
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", b"\xa3abc", "text", None, 12):
        with pytest.raises(UndecodableCommand):
            decode_command(garbage)


# ------------------------------------------------------------------ the FSM never raises


def _state(store: Store) -> dict[str, Any]:
    """Everything the store holds but its last index (an entry's index moves it, applied or not)."""
    state = {k: copy.deepcopy(v) for k, v in vars(store).items() if k not in ("last_index", "_touched")}
    state["service_index"] = {k: sorted(v) for k, v in store.service_index.items()}
    return state


def _seeded() -> tuple[FSM, int]:
    fsm = FSM(Store())
    index = 0
    for cmd in (REGISTER, KV, {**KV, "Key": "other"}, COORD):
        index += 1
        applied = fsm.apply(index, copy.deepcopy(cmd))
        assert applied.result is True and not applied.failed, applied.result
    return fsm, index


POISON = [
    ({"Type": "register", "Node": 123, "Address": "1.2.3.4"}, "register"),
    ({"Type": "deregister", "Node": True}, "deregister"),
    (_with(["Checks", 0, "CheckID"], ["x"]), "register"),
    ({"Type": "register", "Node": "n1", "Address": "1.2.3.4", "Service": {"ID": "x", "Service": 5}}, "register"),
    ({"Type": "kv_set", "Key": 5, "Value": b"x"}, "kv_set"),
    ({"Type": "kv_delete", "Key": ["a"], "Recurse": True}, "kv_delete"),
    ({"Type": "autopilot", "Config": "x"}, "autopilot"),
    ({"Type": "coordinate_batch_update", "Updates": [{"Node": "n1"}]}, "coordinate_batch_update"),
    ({"Type": "restore", "State": 5}, "restore"),
    ({"Type": "no_such_command"}, "unknown"),
    ({"Type": None}, "unknown"),
]


@pytest.mark.parametrize("poison, kind", POISON, ids=[str(p) for p, _ in POISON])
def test_a_poison_command_is_an_error_result_and_changes_nothing(poison, kind):
    fsm, index = _seeded()
    before = _state(fsm.store)
    applied = fsm.apply(index + 1, copy.deepcopy(poison))
    assert isinstance(applied.result, CommandError)
    assert applied.failed == kind and applied.touched == set()
    assert _state(fsm.store) == before
    # the same entry from the log (bytes) too, and the next good entry applies
    applied = fsm.apply_entry(index + 2, msgpack.packb(poison, use_bin_type=True))
    assert isinstance(applied.result, CommandError) and applied.failed == kind
    assert _state(fsm.store) == before
    after = fsm.apply(index + 3, {**KV, "Key": "next"})
    assert after.result is True and not after.failed
    assert fsm.store.kv_get("next")["ModifyIndex"] == index + 3
    assert fsm.store.last_index == index + 3


@pytest.mark.parametrize("data", [b"\xc1", b"", b"\x93\x01\x02\x03", b"\xa4junk", b"\xde\x00\x01", None],
                         ids=repr)
def test_undecodable_entry_bytes_are_an_error_result(data):
    fsm, index = _seeded()
    before = _state(fsm.store)
    applied = fsm.apply_entry(index + 1, data)
    assert isinstance(applied.result, UndecodableCommand) and applied.failed == "undecodable"
    assert str(applied.result).startswith("cannot decode command")
    assert _state(fsm.store) == before
    assert fsm.apply(index + 2, {**KV, "Key": "next"}).result is True


def test_the_error_text_is_the_same_on_every_replica():
    poison = {"Type": "register", "Node": 123, "Address": "1.2.3.4"}
    texts = {str(FSM(Store()).apply_entry(7, encode_command(poison)).result) for _ in range(3)}
    assert texts == {"invalid register command: Node must be a non-empty string, not an integer"}


def test_a_check_for_an_unknown_service_writes_nothing():
    # Consul's register is one transaction: the node and the service do not stay behind
    fsm = FSM(Store())
    applied = fsm.apply(1, {**REGISTER, "Checks": [check("c1", "nope")]})
    assert str(applied.result) == 'Unknown service ID "nope" for check ID "c1"'
    assert not applied.failed  # a precondition: an ordinary result, not an apply error
    assert fsm.store.node("n1") is None and fsm.store.service_instances("web") == []


class BuggyFSM(FSM):
    """An FSM with a bug planted in one handler step: the check write fails after the node and the
    service were written."""

    def _put_check(self, index: int, node_key: str, node_name: str, check: dict[str, Any]) -> None:
        raise RuntimeError(f"planted bug at {object()!r}")


def test_a_handler_failing_midway_leaves_a_usable_store():
    fsm = BuggyFSM(Store())
    fsm.apply(1, {"Type": "kv_set", "Key": "k", "Value": b"1"})
    applied = fsm.apply(2, copy.deepcopy(REGISTER))
    assert isinstance(applied.result, ApplyFailed) and applied.failed == "register"
    # the same text everywhere: no address in it
    assert str(applied.result) == "cannot apply register command: RuntimeError: planted bug at <object object at 0x?>"
    assert "kv:k" in applied.touched  # every watch key moved: blocking queries look again
    store = fsm.store
    # the derived indexes agree with the tables; reads and the next writes work
    assert store.service_index == {"web": {("n1", "web-1")}}
    assert [svc["ID"] for _, svc in store.service_instances("web")] == ["web-1"]
    assert fsm.apply(3, {"Type": "deregister", "Node": "n1"}).result is True
    assert store.node("n1") is None and store.service_instances("web") == [] and store.service_index == {}
    assert fsm.apply(4, {"Type": "kv_set", "Key": "k2", "Value": b"2"}).result is True
    assert store.kv_keys == ["k", "k2"]


# ------------------------------------------------------------------ the driver and the replica


class Counted(RaftMetrics):
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fsm_apply_error(self, command_type: str) -> None:
        self.errors.append(command_type)


def one_voter() -> RaftDriver:
    drv = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=MemoryStorage(),
                     config=RaftConfig(raft_multiplier=1))
    drv.open(Configuration((Server("n1", "127.0.0.1:8300"),)))
    return drv


def test_the_leader_refuses_an_invalid_command_before_the_log():
    async def main():
        drv = one_voter()
        await drv.start()
        try:
            await drv.propose({**KV, "Key": "first"})
            last = drv.core.log.last_index()
            for poison in ({"Type": "register", "Node": 123, "Address": "1.2.3.4"},
                           {"Type": "deregister", "Node": True}, ["not", "a", "map"], {"Type": ["x"]}):
                with pytest.raises(InvalidCommand):
                    await drv.propose(poison)
                with pytest.raises(InvalidCommand):
                    await drv.propose_local(poison)  # where forwarded proposals land
            assert drv.core.log.last_index() == last  # nothing was appended
            assert await drv.propose({**KV, "Key": "after"}) is True
            return drv.fatal, drv.store.kv_get("after")
        finally:
            await drv.stop()

    fatal, entry = asyncio.run(main())
    assert fatal is None and entry is not None


def test_the_driver_skips_entries_it_cannot_apply_from_its_log(caplog):
    # A log written by an older version (no check before the log): committed poison entries between
    # good ones. The driver applies the log on start, logs one line for each bad entry, counts them,
    # and goes on; writes work afterwards.
    entries = (msgpack.packb({"Type": "register", "Node": 123, "Address": "1.2.3.4"}),
               encode_command({**KV, "Key": "good"}),
               b"\xc1\xc1",
               msgpack.packb({"Type": "deregister", "Node": True}),
               msgpack.packb({"Type": "no_such_command"}))
    storage = MemoryStorage()
    first = bootstrap_state(Configuration((Server("n1", "127.0.0.1:8300"),)))
    log_entries = first.entries + tuple(Entry(i, 1, EntryType.COMMAND, data) for i, data in enumerate(entries, 2))
    storage.state = InitialState(HardState(1, "n1", len(log_entries)), None, log_entries)

    async def main():
        drv = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=storage,
                         config=RaftConfig(raft_multiplier=1))
        drv.open()
        drv.metrics = counted = Counted()
        await drv.start()
        try:
            assert drv.applied_index >= len(log_entries)
            assert await drv.propose({**KV, "Key": "after"}) is True
            return drv, counted
        finally:
            await drv.stop()

    with caplog.at_level(logging.ERROR, logger="agent.server.raft"):
        drv, counted = asyncio.run(main())
    assert drv.fatal is None
    assert [e["Key"] for e in drv.store.kv_list("")] == ["after", "good"]
    assert drv.store.all_nodes() == []
    assert counted.errors == ["register", "undecodable", "deregister", "unknown"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [line.split(" error=")[0].split(": ")[1] for line in lines] == [
        "index=2 type=register", "index=4 type=undecodable", "index=5 type=deregister", "index=6 type=unknown"]
    assert "error=invalid register command: Node must be a non-empty string, not an integer" in lines[0]
    assert all("\n" not in line for line in lines)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback


def test_the_driver_survives_its_own_unchecked_proposal(caplog):
    # An entry that reached the core without the leader's check (the core's own propose path, which
    # only propose_local feeds): the leader trusts its own proposals and runs the handler, which fails
    # on the bad Node; the FSM catches it, the driver answers the proposer and goes on.
    async def main():
        drv = one_voter()
        drv.metrics = counted = Counted()
        await drv.start()
        try:
            await drv.propose({**KV, "Key": "before"})
            results = []
            for data in (msgpack.packb({"Type": "register", "Node": 123, "Address": "1.2.3.4"}), b"\xc1\xc1"):
                fut = asyncio.get_running_loop().create_future()
                drv._post(("propose", data, fut))
                results.append(await fut)
            assert await drv.propose({**KV, "Key": "after"}) is True
            return drv, counted, results
        finally:
            await drv.stop()

    with caplog.at_level(logging.ERROR, logger="agent.server.raft"):
        drv, counted, results = asyncio.run(main())
    assert drv.fatal is None and [e["Key"] for e in drv.store.kv_list("")] == ["after", "before"]
    assert [type(r) for r in results] == [ApplyFailed, UndecodableCommand]
    assert str(results[0]) == "cannot apply register command: AttributeError: 'int' object has no attribute 'lower'"
    assert counted.errors == ["register", "undecodable"]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


def test_a_client_replica_skips_an_entry_it_cannot_apply(caplog):
    replica = Replica(Store(), servers=ServerList(datacenter="dc1", join=[], default_port=8300,
                                                  rng=random.Random(1)), node_name="c1")
    replica.metrics = counted = Counted()
    entries = [[1, encode_command({**KV, "Key": "a"})],
               [2, msgpack.packb({"Type": "register", "Node": 123, "Address": "1.2.3.4"})],
               [3, b"\xc1"],
               [4, encode_command({**KV, "Key": "b"})]]
    with caplog.at_level(logging.ERROR, logger="agent.client"):
        replica._apply_entries(entries)
    assert replica.applied_index == 4
    assert [e["Key"] for e in replica.store.kv_list("")] == ["a", "b"]
    assert counted.errors == ["register", "undecodable"]
    assert ["index=2" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [True, False]


def test_a_checked_entry_of_unknown_type_is_still_refused():
    # `checked` skips the definition check only for a known type; the metric label stays bounded
    fsm = FSM(Store())
    for poison in ({"Type": "nope"}, {"Type": ["x"]}, {}):
        applied = fsm.apply_entry(1, msgpack.packb(poison), checked=True)
        assert isinstance(applied.result, InvalidCommand) and applied.failed == "unknown"
