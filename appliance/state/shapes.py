"""Shared, read-only values inside the catalog's records: the memory layout at scale.

How it works
------------
A catalog record is a dict in Consul's JSON shape, and most of what it holds repeats: every
service without a proxy carries the same `Weights`, `Proxy` and `Connect` maps, the instances of
one service carry the same `Tags` and `Meta`, every check an empty `Definition`. Decoded from a
log entry or a snapshot, each record would hold its own copies (about 3.5 KB per instance with its
check at 100,000 instances). The FSM and snapshot restore pass each new record through
`Shapes.node`, `Shapes.service` and `Shapes.check`, which replace those values by one shared
copy per distinct value (hash-consing), and strings that repeat (names, tags, statuses, check
names and outputs) by one interned string.

The shared copies are `FrozenDict` and `FrozenList`: real dicts and lists (the JSON and msgpack
encoders, `==`, `dict(x)`, `{**x}` and `x[:]` see exactly the same data, so every answer and
every snapshot is byte-for-byte what it was) whose changing methods raise `TypeError`. A stored
record is never changed in place (appliance.state.store); a reader that wants a different value
copies first (`dict(x)`, `list(x)`, `copy.deepcopy` gives plain ones), so a change can never leak
from one record into the others sharing the value.

A value is keyed by its msgpack encoding, which is exact (1, 1.0 and true, 0.0 and -0.0 stay
apart, key order is kept: the order the encoders write) and fast; only values of up to
`MAX_ENCODED` bytes encoded are shared, and none holding text msgpack cannot encode. The table holds
at most `MAX_SHAPES` values; when it is full it starts over (records keep what they hold; later
records share anew), so its memory stays bounded whatever churns through the catalog. Strings are
interned up to `MAX_INTERNED` characters; an interned string lives only as long as a record holds it.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, NoReturn

import msgpack

MAX_ENCODED = 1024  # bytes of one shared value, msgpack-encoded; a bigger one stays the record's own
MAX_SHAPES = 1 << 15  # distinct shared values held at once
MAX_INTERNED = 256  # longer strings (long check outputs) are kept as they are

Record = dict[str, Any]


def _read_only(*_: Any, **__: Any) -> NoReturn:
    raise TypeError("a stored catalog value is shared and read-only: copy it to change it")


class FrozenDict(dict[str, Any]):
    """A dict shared between records: reads as a dict, refuses every change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class FrozenList(list[Any]):
    """A list shared between records: reads as a list, refuses every change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


def text(value: Any) -> Any:
    """The interned copy of a string that is not too long (anything else as it is)."""
    if type(value) is str and len(value) <= MAX_INTERNED:
        return sys.intern(value)
    return value


def _freeze(value: Any) -> Any:
    t = type(value)
    if t is dict or t is FrozenDict:
        return FrozenDict({text(k): _freeze(v) for k, v in value.items()})
    if t is list or t is FrozenList:
        return FrozenList([_freeze(v) for v in value])
    return text(value)


_NODE_TEXT = ("Node", "Address", "Datacenter")
_NODE_VALUES = ("TaggedAddresses", "Meta")
_SERVICE_TEXT = ("Kind", "Service", "Address", "SocketPath", "PeerName")
_SERVICE_VALUES = ("Tags", "TaggedAddresses", "Meta", "Weights", "Proxy", "Connect")
# a check's ServiceID is its service's own ID string (stamped by the FSM and by restore)
_CHECK_TEXT = ("Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceName", "Type",
               "Interval", "Timeout")
_CHECK_VALUES = ("ServiceTags", "Definition")


class Shapes:
    """The store's table of shared values (module docstring)."""

    __slots__ = ("_table", "_pack")

    def __init__(self) -> None:
        self._table: dict[bytes, Any] = {}
        # the key: the value's msgpack bytes (exact types, key order); a packer per table, since a
        # Packer must not be shared between threads and a store is written by one at a time
        self._pack = msgpack.Packer(use_bin_type=True).pack

    # The table is a cache, not state: which values are shared never changes what the store
    # holds or answers, so any two tables are equal and a copy starts empty.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shapes)

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> Shapes:
        return Shapes()

    def share(self, value: Any) -> Any:
        """The shared read-only copy of a dict or list equal to `value` (`value` itself if it is
        too big to share or not a dict or list)."""
        t = type(value)
        if t is not dict and t is not list:  # a scalar, or shared already (another record's)
            return value
        try:
            key = self._pack(value)
        except (TypeError, ValueError, OverflowError):  # lone surrogates: not shared, kept as they are
            return value
        if len(key) > MAX_ENCODED:
            return value
        shared = self._table.get(key)
        if shared is None:
            if len(self._table) >= MAX_SHAPES:
                self._table.clear()
            shared = self._table[key] = _freeze(value)
        return shared

    def _fill(self, rec: Record, texts: tuple[str, ...], values: tuple[str, ...]) -> Record:
        get, intern, share = rec.get, sys.intern, self.share  # the restore's hot loop: no calls it can skip
        for f in texts:
            v = get(f)
            if type(v) is str and 0 < len(v) <= MAX_INTERNED:
                rec[f] = intern(v)
        for f in values:
            v = get(f)
            t = type(v)
            if t is dict or t is list:
                rec[f] = share(v)
        return rec

    def node(self, rec: Record) -> Record:
        """A new node record (not yet stored) with its repeated values shared, in place."""
        return self._fill(rec, _NODE_TEXT, _NODE_VALUES)

    def service(self, rec: Record) -> Record:
        """A new NodeService record with its repeated values shared, in place."""
        return self._fill(rec, _SERVICE_TEXT, _SERVICE_VALUES)

    def check(self, rec: Record) -> Record:
        """A new HealthCheck record with its repeated values shared, in place."""
        return self._fill(rec, _CHECK_TEXT, _CHECK_VALUES)
