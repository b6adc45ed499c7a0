"""The FSM's commands: one schema per command type, and the codec of the log entries holding them.

How it works
------------
A command is a msgpack map whose "Type" names one of the definitions in `COMMANDS` (fsm.py says
what each one does). `validate(command)` checks a command against its definition and returns its
type, or raises `InvalidCommand` naming the command type and the field:

    invalid register command: Node must be a non-empty string, not an integer
    invalid register command: Checks[0].CheckID must be a string, not a list

A definition is a `Record`: its fields, each with the types its value may have (compared with
`type(value) in types`, so a bool is never taken for an int), an optional deeper check (list
elements, map values, a nested record), and the fields that must be present. Unknown fields are
refused: every producer (the HTTP handlers, anti-entropy, the leader's reconciliation, the
coordinate batcher, autopilot, snapshot restore) writes exactly these shapes, and the records a
command carries (NodeService, HealthCheck) are stored as they come, so the store only ever holds
what the readers expect. Values the store keeps opaque and Consul passes through (a check's
`Definition`, a service's `Proxy` and `Connect`) must be plain JSON-like data.

Two places check: the leader before a command enters the log (`RaftDriver.propose_local`, where
local and forwarded proposals land: a bad command is refused with its text, nothing is
appended), and the FSM before it applies an entry (an entry written by another version, or one
that bypassed the leader's check, is refused whole, identically on every replica, and never
stops Raft); the leader does not check its own proposals again when it applies them. Validation
runs on every write, so it is one flat loop over the fields with no text built unless something
is wrong: about 0.8 µs for a kv_set, 1 µs for a node registration, 5 µs for a register command
with a node, a service and a check (CPU time, 2-core machine under load).

The codec is msgpack with `unicode_errors="surrogateescape"` both ways: a string holding bytes
that are not UTF-8 (a KV key taken from a request's raw path, kept as lone surrogates) is written
as those bytes and read back as the same string. Encoding tries msgpack's strict fast path first
and only falls back to the error handler for a string with lone surrogates: the bytes are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, cast

import msgpack

from appliance.api.gojson import DecodeError, decode
from appliance.queries.definition import PREPARED_QUERY
from appliance.state.shapes import FrozenDict, FrozenList

Command = dict[str, Any]


class CommandError(ValueError):
    """A command that cannot be applied (reported to the proposer; the HTTP layer answers 500
    with its text)."""


class InvalidCommand(CommandError):
    """A command that does not match its definition: refused before the log and before apply."""

    def __init__(self, command_type: str, field: str, problem: str) -> None:
        self.command_type = command_type
        self.field = field
        where = f"{field} " if field else ""
        super().__init__(f"invalid {command_type} command: {where}{problem}")


class UnknownCommand(InvalidCommand):
    """No definition for this "Type" (or none given)."""

    def __init__(self, command_type: Any) -> None:  # its own text, not InvalidCommand's
        self.command_type = "unknown"
        self.field = "Type"
        CommandError.__init__(self, f"unknown command type {_short(command_type)}")


class UndecodableCommand(CommandError):
    """Log entry bytes that are not a msgpack command."""

    command_type = "undecodable"


# ---------------------------------------------------------------------------------------- codec


def encode_command(command: Command) -> bytes:
    """A command as log entry bytes; InvalidCommand if it holds what msgpack cannot carry."""
    try:
        try:  # strict first: msgpack's fast path (an error handler encodes every string apart)
            packed: bytes = msgpack.packb(command, use_bin_type=True)
        except UnicodeEncodeError:  # lone surrogates: the same bytes surrogateescape decoded them from
            packed = msgpack.packb(command, use_bin_type=True, unicode_errors="surrogateescape")
        return packed
    except (TypeError, ValueError, OverflowError) as err:  # UnicodeEncodeError is a ValueError
        kind = command.get("Type") if type(command) is dict else None
        raise InvalidCommand(kind if type(kind) is str else "unknown", "", f"cannot be encoded: {err}") from None


def decode_command(data: Any) -> Command:
    """Log entry bytes as a command map (not yet validated); UndecodableCommand if they are not one."""
    if type(data) is not bytes:
        raise UndecodableCommand(f"cannot decode command: entry data is {_what(data)}, not bytes")
    try:
        command = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")
    except Exception as err:  # noqa: BLE001 - msgpack raises many types for garbage
        raise UndecodableCommand(f"cannot decode command: {type(err).__name__}: {err}") from None
    if type(command) is not dict:
        raise UndecodableCommand(f"cannot decode command: {_what(command)}, not a map")
    return command


# ---------------------------------------------------------------------------------------- checks
#
# A field's spec is (types, deep, text): the value's exact type must be in `types`, and `deep`, if
# any, is called on a value that is not None and must return True (list elements, map values,
# ranges, a nested record). `Record.ok` is the pass every write takes: booleans only, no strings
# built. Only when it fails does `Record.explain` walk the same specs again to name the field.

_NONE = type(None)
_NAMES = {str: "a string", int: "an integer", bool: "a boolean", float: "a number", bytes: "bytes",
          list: "a list", dict: "a map", _NONE: "null", FrozenList: "a list", FrozenDict: "a map"}
UINT64_MAX = (1 << 64) - 1
MAX_JSON_DEPTH = 32

Deep = Callable[[Any], bool]
Spec = tuple[frozenset[type], Deep | None, str]
Explain = Callable[[str, str, Any], None]  # (command type, field path, value): raises InvalidCommand


class _Explained(Protocol):
    """A deep check that names the field it refuses itself (a nested record, a list or map of them)."""

    explain: Explain

    def __call__(self, value: Any, /) -> bool: ...


def _explained(deep: Deep, explain: Explain) -> Deep:
    """`deep` carrying `explain`, which `Record.explain` calls when `deep` refuses a value."""
    checked = cast(_Explained, deep)
    checked.explain = explain
    return checked


def _what(value: Any) -> str:
    if type(value) is str and not value:
        return "an empty string"
    return _NAMES.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _field(path: str, key: Any) -> str:
    name = key if type(key) is str else _short(key)
    return f"{path}.{name}" if path else name


def spec(types: tuple[type, ...], text: str, deep: Deep | None = None, *, null: bool = False) -> Spec:
    # a stored record's shared values (appliance/state/shapes.py) may go into a new command
    types += tuple(frozen for plain, frozen in ((dict, FrozenDict), (list, FrozenList)) if plain in types)
    if null:
        return frozenset(types + (_NONE,)), deep, text + " or null"
    return frozenset(types), deep, text


def _non_empty(v: str) -> bool:
    return v != ""


def _uint64(v: int) -> bool:
    return 0 <= v <= UINT64_MAX


def _all_str(v: list[Any]) -> bool:
    for x in v:
        if type(x) is not str:
            return False
    return True


def _str_map(v: dict[Any, Any]) -> bool:
    for k, x in v.items():
        if type(k) is not str or type(x) is not str:
            return False
    return True


def _numbers(v: list[Any]) -> bool:
    for x in v:
        if not (type(x) is float and math.isfinite(x) or type(x) is int):
            return False
    return True


def _finite(v: float) -> bool:
    return type(v) is int or math.isfinite(v)


_CONTAINERS = frozenset((dict, list, FrozenDict, FrozenList))


def _json(value: Any, depth: int = 0) -> bool:
    """Plain JSON-like data: null, bool, int, finite float, str, lists and string-keyed maps of them."""
    t = type(value)
    if t is dict or t is FrozenDict:
        if depth >= MAX_JSON_DEPTH:
            return False
        for k, x in value.items():
            if type(k) is not str:
                return False
            tx = type(x)
            if tx is str or tx is bool or tx is int or x is None or tx in _CONTAINERS and not x:
                continue  # the common leaves, inline
            if not _json(x, depth + 1):
                return False
        return True
    if t is list or t is FrozenList:
        if depth >= MAX_JSON_DEPTH:
            return False
        for x in value:
            if not _json(x, depth + 1):
                return False
        return True
    if t is str or t is bool or t is int or value is None:
        return True
    return t is float and math.isfinite(value)


STRING = spec((str,), "a string")
NAME = spec((str,), "a non-empty string", _non_empty)
INT = spec((int,), "an integer")
UINT64 = spec((int,), "an unsigned 64-bit integer", _uint64)
BOOL = spec((bool,), "a boolean")
BYTES = spec((bytes,), "bytes")
NUMBER = spec((int, float), "a finite number", _finite)
STRINGS = spec((list,), "a list of strings", _all_str)
STRING_MAP = spec((dict,), "a map of strings", _str_map, null=True)
JSON_MAP = spec((dict,), "a map of JSON values", _json)


class Record:
    """A map with these fields (a spec each), of which `required` must be present."""

    __slots__ = ("name", "fields", "required", "ok")

    ok: Deep

    def __init__(self, name: str, fields: dict[str, Spec], required: tuple[str, ...] = ()) -> None:
        self.name = name
        self.fields = fields
        self.required = frozenset(required)

        def ok(rec: Any, fields: dict[str, Spec] = fields, required: frozenset[str] = self.required) -> bool:
            if type(rec) is not dict and type(rec) is not FrozenDict:
                return False
            for key, value in rec.items():
                s = fields.get(key)
                if s is None or type(value) not in s[0] or (
                        s[1] is not None and value is not None and not s[1](value)):
                    return False
            return rec.keys() >= required

        self.ok = ok  # a plain function: the hot path skips the method binding

    def check(self, ctype: str, path: str, rec: Any) -> None:
        """Raise InvalidCommand naming the first field that is wrong (nothing if `rec` is fine)."""
        if not self.ok(rec):
            self.explain(ctype, path, rec)

    def explain(self, ctype: str, path: str, rec: Any) -> None:
        if type(rec) is not dict and type(rec) is not FrozenDict:
            raise InvalidCommand(ctype, path, f"must be a map ({self.name}), not {_what(rec)}")
        for key, value in rec.items():
            s = self.fields.get(key)
            where = _field(path, key)
            if s is None:
                raise InvalidCommand(ctype, where, f"is not a field of {self.name}")
            if type(value) not in s[0]:
                raise InvalidCommand(ctype, where, f"must be {s[2]}, not {_what(value)}")
            if s[1] is not None and value is not None and not s[1](value):  # the right type, not the content
                explain = getattr(s[1], "explain", None)
                if explain is not None:
                    explain(ctype, where, value)  # a nested record names its own field
                detail = f", not {_what(value)}" if type(value) is str else (
                    f", not {value!r}" if type(value) in (int, float) else "")
                raise InvalidCommand(ctype, where, f"must be {s[2]}{detail}")
        if not rec.keys() >= self.required:
            raise InvalidCommand(ctype, _field(path, sorted(self.required - rec.keys())[0]), "is missing")

    def spec(self, *, null: bool = False, empty: bool = False) -> Spec:
        return spec((dict,), f"a map ({self.name})", _nested(self, empty=empty), null=null)

    def list_spec(self, *, null: bool = False) -> Spec:
        return spec((list,), f"a list of maps ({self.name})", _list_of(self), null=null)

    def map_spec(self, *, null: bool = False) -> Spec:
        return spec((dict,), f"a map of maps ({self.name})", _map_of(self), null=null)


def _nested(record: Record, *, empty: bool = False) -> Deep:
    """deep check: the value is this record (or, with `empty`, an empty map: none given)."""
    ok = record.ok
    deep: Deep
    if empty:
        def ok_or_empty(v: dict[Any, Any]) -> bool:
            return not v or ok(v)
        deep = ok_or_empty
    else:
        deep = ok  # the record's own function: one call less
    return _explained(deep, record.explain)


def _list_of(record: Record) -> Deep:
    """deep check: every element is this record."""
    ok = record.ok

    def deep(v: list[Any]) -> bool:
        for x in v:
            if not ok(x):
                return False
        return True

    def explain(ctype: str, path: str, v: list[Any]) -> None:
        for i, x in enumerate(v):
            record.check(ctype, f"{path}[{i}]", x)

    return _explained(deep, explain)


def _map_of(record: Record) -> Deep:
    """deep check: string keys, every value this record."""
    ok = record.ok

    def deep(v: dict[Any, Any]) -> bool:
        for k, x in v.items():
            if type(k) is not str or not ok(x):
                return False
        return True

    def explain(ctype: str, path: str, v: dict[Any, Any]) -> None:
        for k, x in v.items():
            if type(k) is not str:
                raise InvalidCommand(ctype, path, f"must have string keys, not {_what(k)}")
            record.check(ctype, f"{path}[{_short(k)}]", x)

    return _explained(deep, explain)


# ---------------------------------------------------------------------------------------- records

WEIGHTS = Record("Weights", {"Passing": INT, "Warning": INT})
SERVICE_ADDRESS = Record("ServiceAddress", {"Address": STRING, "Port": INT}, ("Address", "Port"))

# NodeService as the catalog stores it (LocalState.node_service; reconcile.consul_service).
NODE_SERVICE = Record("NodeService", {
    "Kind": STRING, "ID": STRING, "Service": NAME, "Tags": spec((list,), "a list of strings", _all_str, null=True),
    "Address": STRING, "TaggedAddresses": SERVICE_ADDRESS.map_spec(null=True),
    "Meta": STRING_MAP, "Port": INT, "SocketPath": STRING, "Weights": WEIGHTS.spec(),
    "EnableTagOverride": BOOL, "Proxy": JSON_MAP, "Connect": JSON_MAP, "PeerName": STRING,
}, ("ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride", "Proxy", "Connect"))

# HealthCheck without the indexes (LocalState.health_check; the catalog endpoint; reconcile.serf_check).
HEALTH_CHECK = Record("HealthCheck", {
    "Node": STRING, "CheckID": NAME, "Name": STRING, "Status": STRING, "Notes": STRING, "Output": STRING,
    "ServiceID": STRING, "ServiceName": STRING, "ServiceTags": STRINGS, "Type": STRING, "Interval": STRING,
    "Timeout": STRING, "ExposedPort": INT, "Definition": JSON_MAP,
}, ("CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName", "ServiceTags", "Type",
    "Interval", "Timeout", "ExposedPort", "Definition"))

COORDINATE = Record("Coordinate", {
    "Vec": spec((list,), "a list of finite numbers", _numbers), "Error": NUMBER, "Adjustment": NUMBER,
    "Height": NUMBER,
}, ("Vec",))
# an update for an unknown (or empty) node is dropped when the batch applies
COORDINATE_UPDATE = Record("CoordinateUpdate", {"Node": STRING, "Segment": STRING, "Coord": COORDINATE.spec()},
                           ("Node", "Coord"))

# api.AutopilotConfiguration, durations as Go duration strings (AutopilotConfig.to_api)
AUTOPILOT_CONFIG = Record("AutopilotConfiguration", {
    "CleanupDeadServers": BOOL, "LastContactThreshold": STRING, "MaxTrailingLogs": INT, "MinQuorum": INT,
    "ServerStabilizationTime": STRING, "RedundancyZoneTag": STRING, "DisableUpgradeMigration": BOOL,
    "UpgradeVersionTag": STRING,
})

_TYPE = spec((str,), "a string")


def _kv_set_rules(cmd: Command) -> None:
    verb = cmd.get("Verb", "set")
    if verb == "cas":
        if "Index" not in cmd:
            raise InvalidCommand("kv_set", "Index", 'is missing (Verb "cas")')
    elif verb != "set":
        raise InvalidCommand("kv_set", "Verb", f'must be "set" or "cas", not {_short(verb)}')


# Sessions (appliance/state/sessions.py): LockDelay in nanoseconds, TTL the string given.
SERVICE_CHECK = Record("ServiceCheck", {"ID": STRING, "Namespace": STRING}, ("ID",))
SESSION = Record("Session", {
    "ID": NAME, "Name": STRING, "Node": NAME, "LockDelay": UINT64, "Behavior": STRING, "TTL": STRING,
    "NodeChecks": spec((list,), "a list of strings", _all_str, null=True),
    "ServiceChecks": SERVICE_CHECK.list_spec(null=True),
    "Checks": spec((list,), "a list of strings", _all_str, null=True),
}, ("ID", "Node", "LockDelay", "Behavior", "TTL"))

# /v1/txn operations (appliance/state/txn.py): exactly one of KV, Node, Service, Check each. A
# service or check to write is checked against NODE_SERVICE / HEALTH_CHECK when it applies.
MAX_TXN_OPS = 128
_VALUE = spec((bytes, str), "bytes", null=True)
TXN_KV = Record("TxnKVOp", {"Verb": NAME, "Key": STRING, "Value": _VALUE, "Flags": UINT64, "Index": UINT64,
                            "Session": STRING}, ("Verb", "Key"))
TXN_NODE_RECORD = Record("Node", {"ID": STRING, "Node": STRING, "Address": STRING, "Datacenter": STRING,
                                  "TaggedAddresses": STRING_MAP, "Meta": STRING_MAP, "ModifyIndex": UINT64},
                         ("Node",))
TXN_NODE = Record("TxnNodeOp", {"Verb": NAME, "Node": TXN_NODE_RECORD.spec()}, ("Verb", "Node"))
# a get or delete names only the ID (and ModifyIndex); a set or cas is checked whole when it applies
TXN_SERVICE_RECORD = Record("TxnService", {**NODE_SERVICE.fields, "Service": STRING, "ModifyIndex": UINT64}, ("ID",))
TXN_CHECK_RECORD = Record("TxnCheck", {**HEALTH_CHECK.fields, "CheckID": STRING, "ModifyIndex": UINT64},
                          ("Node", "CheckID"))
TXN_SERVICE = Record("TxnServiceOp", {"Verb": NAME, "Node": STRING, "Service": TXN_SERVICE_RECORD.spec()},
                     ("Verb", "Node", "Service"))
TXN_CHECK = Record("TxnCheckOp", {"Verb": NAME, "Check": TXN_CHECK_RECORD.spec()}, ("Verb", "Check"))
TXN_OP = Record("TxnOp", {"KV": TXN_KV.spec(), "Node": TXN_NODE.spec(), "Service": TXN_SERVICE.spec(),
                          "Check": TXN_CHECK.spec()})


def _txn_rules(cmd: Command) -> None:
    ops = cmd["Ops"]
    if len(ops) > MAX_TXN_OPS:
        raise InvalidCommand("txn", "Ops", f"must hold at most {MAX_TXN_OPS} operations, not {len(ops)}")
    for i, op in enumerate(ops):
        if len(op) != 1:
            raise InvalidCommand("txn", f"Ops[{i}]", "must hold exactly one of KV, Node, Service, Check")


def _prepared_query_rules(cmd: Command) -> None:
    op = cmd["Op"]
    if op == "set":
        query = cmd.get("Query")
        if query is None or type(query.get("ID")) is not str or not query["ID"]:
            raise InvalidCommand("prepared_query", "Query.ID", 'must be a non-empty string (Op "set")')
        try:  # every field of the stored definition has the type Consul's struct gives it
            decode(query, PREPARED_QUERY)
        except DecodeError as err:
            raise InvalidCommand("prepared_query", "Query", str(err)) from None
    elif op == "delete":
        if not cmd.get("ID"):
            raise InvalidCommand("prepared_query", "ID", 'is missing (Op "delete")')
    else:
        raise InvalidCommand("prepared_query", "Op", f'must be "set" or "delete", not {_short(op)}')


_CA_OPS = frozenset({"serial", "init", "set", "prune"})
CA_ROOT = Record("CARoot", {
    "ID": NAME, "Name": STRING, "SerialNumber": UINT64, "SigningKeyID": STRING, "ExternalTrustDomain": STRING,
    "NotBefore": STRING, "NotAfter": STRING, "RootCert": NAME, "IntermediateCerts": spec(
        (list,), "a list of strings", _all_str, null=True), "Active": BOOL, "PrivateKeyType": STRING,
    "PrivateKeyBits": INT, "RotatedOutAt": STRING,
}, ("ID", "RootCert", "Active"))
CA_CONFIG = Record("CAConfiguration", {"Provider": NAME, "Config": JSON_MAP, "ClusterID": NAME},
                   ("Provider", "Config", "ClusterID"))


def _connect_ca_rules(cmd: Command) -> None:
    if cmd["Op"] not in _CA_OPS:
        raise InvalidCommand("connect_ca", "Op", f"must be one of {sorted(_CA_OPS)}, not {_short(cmd['Op'])}")
    if cmd["Op"] == "init" and ("Config" not in cmd or "Roots" not in cmd):
        raise InvalidCommand("connect_ca", "Config" if "Config" not in cmd else "Roots", 'is missing (Op "init")')


def _config_entry_rules(cmd: Command) -> None:
    op = cmd["Op"]
    if op == "set" and "Entry" not in cmd:
        raise InvalidCommand("config_entry", "Entry", 'is missing (Op "set")')
    if op not in ("set", "delete"):
        raise InvalidCommand("config_entry", "Op", f'must be "set" or "delete", not {_short(op)}')


def _acl_rules(cmd: Command) -> None:
    from appliance.state.acl import command_problem

    problem = command_problem(cmd)
    if problem is not None:
        raise InvalidCommand("acl", *problem)


class Definition:
    """One command type: its record (fields of the command map) and rules across fields."""

    __slots__ = ("record", "rules")

    def __init__(self, record: Record, rules: Callable[[Command], None] | None = None) -> None:
        self.record = record
        self.rules = rules


COMMANDS: dict[str, Definition] = {
    "register": Definition(Record("register", {
        "Type": _TYPE, "Node": NAME, "ID": STRING, "Address": STRING, "Datacenter": STRING,
        "TaggedAddresses": STRING_MAP, "NodeMeta": STRING_MAP, "SkipNodeUpdate": BOOL,
        "Service": NODE_SERVICE.spec(null=True, empty=True),  # null or {}: no service
        "Checks": HEALTH_CHECK.list_spec(null=True),
    }, ("Node",))),
    "deregister": Definition(Record("deregister", {
        "Type": _TYPE, "Node": NAME, "ServiceID": STRING, "CheckID": STRING,
    }, ("Node",))),
    "kv_set": Definition(Record("kv_set", {
        "Type": _TYPE, "Verb": STRING, "Key": STRING, "Flags": UINT64, "Index": UINT64,
        # bytes from the KV endpoint; a str is stored as is (the simulator's workload writes them)
        "Value": spec((bytes, str), "bytes", null=True),
    }, ("Key",)), _kv_set_rules),
    "kv_delete": Definition(Record("kv_delete", {
        "Type": _TYPE, "Key": STRING, "Recurse": BOOL, "Index": UINT64,
    }, ("Key",))),
    "kv_lock": Definition(Record("kv_lock", {
        "Type": _TYPE, "Key": STRING, "Flags": UINT64, "Value": _VALUE, "Session": STRING, "Checked": UINT64,
    }, ("Key", "Session"))),
    "kv_unlock": Definition(Record("kv_unlock", {
        "Type": _TYPE, "Key": STRING, "Flags": UINT64, "Value": _VALUE, "Session": STRING,
    }, ("Key", "Session"))),
    "session_create": Definition(Record("session_create", {"Type": _TYPE, "Session": SESSION.spec()}, ("Session",))),
    "session_destroy": Definition(Record("session_destroy", {"Type": _TYPE, "ID": STRING}, ("ID",))),
    "txn": Definition(Record("txn", {"Type": _TYPE, "Ops": TXN_OP.list_spec(), "Checked": UINT64}, ("Ops",)),
                      _txn_rules),
    # a prepared query written whole (appliance/queries/definition.py's shape) or deleted by ID
    "prepared_query": Definition(Record("prepared_query", {
        "Type": _TYPE, "Op": NAME, "Query": JSON_MAP, "ID": STRING,
    }, ("Op",)), _prepared_query_rules),
    # an ACL object written whole or deleted (appliance/state/acl.py's ops)
    "acl": Definition(Record("acl", {
        "Type": _TYPE, "Op": NAME, "Object": JSON_MAP, "ID": STRING, "IDs": STRINGS, "Create": BOOL,
        "ResetIndex": UINT64,
    }, ("Op",)), _acl_rules),
    # the Connect CA (appliance/state/connect.py): a serial number, the first root, a rotation
    "connect_ca": Definition(Record("connect_ca", {
        "Type": _TYPE, "Op": NAME, "Config": CA_CONFIG.spec(), "Roots": CA_ROOT.list_spec(),
        "Keys": STRING_MAP, "CAS": UINT64, "Serial": UINT64, "IDs": STRINGS,
    }, ("Op",)), _connect_ca_rules),
    # a config entry written whole (Consul's JSON shape, checked by appliance/connect/entries.py) or deleted
    "config_entry": Definition(Record("config_entry", {
        "Type": _TYPE, "Op": NAME, "Kind": NAME, "Name": NAME, "Entry": JSON_MAP, "CAS": UINT64,
    }, ("Op", "Kind", "Name")), _config_entry_rules),
    "autopilot": Definition(Record("autopilot", {
        "Type": _TYPE, "Config": AUTOPILOT_CONFIG.spec(), "Init": BOOL, "CAS": UINT64,
    }, ("Config",))),
    "coordinate_batch_update": Definition(Record("coordinate_batch_update", {
        "Type": _TYPE, "Updates": COORDINATE_UPDATE.list_spec(null=True),
    })),
    "restore": Definition(Record("restore", {"Type": _TYPE, "State": BYTES}, ("State",))),
}


def validate(command: Any) -> str:
    """Check a command against its definition; return its type. InvalidCommand says what is wrong."""
    if type(command) is not dict:
        raise InvalidCommand("unknown", "", f"a command must be a map, not {_what(command)}")
    ctype = command.get("Type")
    if type(ctype) is not str:
        raise UnknownCommand(ctype)
    definition = COMMANDS.get(ctype)
    if definition is None:
        raise UnknownCommand(ctype)
    definition.record.check(ctype, "", command)
    if definition.rules is not None:
        definition.rules(command)
    return ctype


def command_type(command: Any) -> str:
    """A bounded label for metrics and logs: the command's type if it is a known one, else "unknown"."""
    ctype = command.get("Type") if type(command) is dict else None
    return ctype if type(ctype) is str and ctype in COMMANDS else "unknown"
