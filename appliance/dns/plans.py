"""Compiled answer plans: what a DNS question name resolves to, read from the store once.

How it works
------------
Answering a question is mostly the same work every time: parse the name into a `Lookup`, read
the nodes, instances and checks behind it, decide which are healthy, and turn each into its
records. The `Answerer` (appliance/dns/answers.py) keeps the result as a `Plan`, keyed by the
question name as sent on the wire (lowercased: `WEB` and `web` share one) and its type:

* `Plan.lookup`: the parsed name, which never changes;
* `Plan.message`: the answer compiled from the store: fixed answer groups (a node's records),
  or for a service one list of choices per healthy instance (`Message.instances`: the dedup key
  and the answer group with its additional records, owner names still "the question"), and the
  watch keys it was read from (`deps`).

A reply renders the message (`render`): the instances shuffled with the caller's `random.Random`
(the same draw as shuffling the instances themselves, so a seeded answer is unchanged), repeated
addresses skipped, `a_record_limit` applied, then packed (appliance/dns/answers_wire.py) with the
question's own case. A plan is current while `store.last_index` has not moved, or none of its
`deps` moved past the index it was built at (the rule the server's wire cache uses); otherwise it
is compiled again. Plans are kept only for the store itself, never for a per-query ACL view.

The table is bounded twice: `PLAN_ENTRIES` names, and `PLAN_RECORDS` records over all plans (so
many spellings of a large service cannot hold the catalog many times over); past either, the
oldest plans go first. Sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.dns import answers_wire as wire
from appliance.dns.answers_wire import Rec
from appliance.dns.names import NOERROR, Lookup

PLAN_ENTRIES = 4096
PLAN_RECORDS = 100_000
FAILED = object()  # the dedup key of an instance whose records failed to build
Choice = tuple[Any, "wire.Group | Exception"]  # (dedup key, answer group), per instance


@dataclass(slots=True)
class Message:
    """An answer before packing: answer groups (record + the additional records that go with it).

    A service answer leaves `groups` empty and lists, per healthy instance, its (dedup key, group)
    choices in `instances`; `render` picks the groups of one reply from them. A group that could
    not be built (a name that cannot be encoded) is the exception instead, raised by the replies
    that reach it, so they fail exactly where building that instance's records always failed."""

    rcode: int = NOERROR
    groups: list[wire.Group] = field(default_factory=list)
    authority: list[Rec] = field(default_factory=list)
    additional: list[wire.Extra] = field(default_factory=list)  # not tied to an answer (addr lookups)
    deps: tuple[str, ...] | None = ()
    shuffled: bool = False
    instances: list[list[Choice]] | None = None
    ordered: bool = False  # keep the instances' order (a prepared query chose it)
    limit: int = 0  # at most this many answers (a_record_limit), 0: no limit
    distinct: bool = False  # at most one group per instance, no key twice, none failed

    def seal(self) -> Message:
        """Note whether rendering may skip deduplication (`distinct`); the message is final."""
        instances = self.instances or ()
        keys = [key for choices in instances for key, _ in choices]
        self.distinct = (all(len(choices) <= 1 for choices in instances) and len(set(keys)) == len(keys)
                         and all(isinstance(group, wire.Group) for choices in instances for _, group in choices))
        return self

    def weight(self) -> int:
        """Records held, for the plan table's budget."""
        groups = list(self.groups)
        for choices in self.instances or ():
            groups.extend(group for _, group in choices if isinstance(group, wire.Group))
        return sum(1 + len(g.extras) for g in groups) + len(self.authority) + len(self.additional) + 1


def render(msg: Message, rng: Any) -> tuple[list[wire.Group], bool]:
    """The answer groups of one reply, and whether another reply may order them differently."""
    instances = msg.instances
    if instances is None:
        return msg.groups, msg.shuffled
    shuffled = False
    if not msg.ordered and instances:
        instances = instances.copy()
        rng.shuffle(instances)
        shuffled = len(instances) > 1
    limit = msg.limit
    groups: list[wire.Group]
    if msg.distinct:  # every group is a Group (see Message.seal)
        groups = [choices[0][1] for choices in instances if choices]  # type: ignore[misc]
        return (groups[:limit] if limit else groups), shuffled
    groups = []
    seen: set[Any] = set()
    for choices in instances:
        for key, group in choices:
            if key not in seen:
                if isinstance(group, Exception):  # an instance whose records could not be built
                    raise group.with_traceback(None)
                seen.add(key)
                groups.append(group)
        if limit and len(groups) >= limit:
            break
    return groups, shuffled


@dataclass(slots=True)
class Plan:
    lookup: Lookup
    message: Message | None = None  # None: not compiled yet
    store: Any = None  # the store it was compiled from
    built: int = 0  # store.last_index when compiled
    checked: int = 0  # store.last_index when last found current
    weight: int = 0


class Plans:
    """The bounded table of plans (see the module docstring)."""

    def __init__(self, entries: int = PLAN_ENTRIES, records: int = PLAN_RECORDS) -> None:
        self.entries = entries
        self.records = records
        self.table: dict[Any, Plan] = {}
        self.weight = 0

    def get(self, key: Any) -> Plan | None:
        return self.table.get(key)

    def add(self, key: Any, plan: Plan) -> None:
        self.table[key] = plan
        self._trim()

    def current(self, plan: Plan, store: Any) -> Message | None:
        """The plan's message if it still holds for `store`, else None."""
        msg = plan.message
        if msg is None or plan.store is not store:
            return None
        last = store.last_index
        if plan.checked != last:
            if msg.deps is None or store.index_of(*msg.deps) > plan.built:
                return None
            plan.checked = last
        return msg

    def compiled(self, plan: Plan, msg: Message, store: Any) -> Message:
        """Keep `msg` as the plan's answer from `store` now (unless it alone is over budget)."""
        weight = msg.weight()
        self.weight -= plan.weight
        if weight > self.records or msg.deps is None:
            plan.message, plan.store, plan.weight = None, None, 0
            return msg
        plan.message, plan.store, plan.weight = msg, store, weight
        plan.built = plan.checked = store.last_index
        self.weight += weight
        self._trim()
        return msg

    def _trim(self) -> None:
        table = self.table
        while len(table) > 1 and (len(table) > self.entries or self.weight > self.records):
            gone = table.pop(next(iter(table)))
            self.weight -= gone.weight
            gone.message, gone.store, gone.weight = None, None, 0
