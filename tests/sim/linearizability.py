"""A linearizability checker for a KV history (get / set / compare-and-set), Porcupine-style.

How it works
------------
The algorithm is Wing & Gong's search with Lowe's memoisation, as Porcupine implements it
(written here from the published description, not from its code):

1. Linearizability is local (Herlihy & Wing): check each key's sub-history on its own. A key's
   state is one value (None = absent).
2. Turn operations into call and return events sorted by time; on equal times calls come first
   (closed intervals: touching operations count as concurrent). Link them into a list.
3. Depth-first search. At a call event, try to linearize that operation now: run the model; if
   its recorded output is legal and (set of linearized operations, new state) has not been seen
   before, remember it, lift the call and its return out of the list and start again from the
   head. At a return event (its operation was not linearized yet) there is no way forward:
   backtrack to the last linearized operation, put it back and try the next event after it. An
   empty list is a witness; an empty backtracking stack means no linearization exists.

Outcomes (raft-notes §10.2): `ok` operations have their output and return time; `unknown` writes
(timed out, crashed server) may or may not have happened: they return at +infinity and any
effect is allowed; failed operations (definitely not applied) and reads without an answer are
dropped before checking. A search that exceeds its step budget answers "unknown", never "ok".

Two reductions keep histories with many unknown writes decidable (the search is otherwise
exponential in them: sim seed 106029, 16 unknown writes on one key, needed over 2,000,000 steps):

* Unobserved values are one value. A value no read returned and no CAS expected can only make
  reads and CASes of observed values fail, and any two such values do that alike; they all become
  one `JUNK` state, so the memo sees far fewer distinct states.
* Interchangeable unknown writes go in call order. Two unknown operations with the same effect
  (the same kind, expected value and, after the above, written value) both return at +infinity,
  so in any linearization the earlier-called one can take the place of the later one; the search
  only linearizes a member of such a class once every earlier-called member is linearized. That
  cuts the 2^n subsets of n interchangeable writes to n + 1 prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GET, SET, CAS = "get", "set", "cas"


@dataclass
class Op:
    """One client operation. input: SET -> value, CAS -> (expected, new), GET -> None.
    output: GET -> value read, SET -> True, CAS -> True/False; None when unknown."""

    client: str
    key: str
    kind: str
    input: Any
    call: float
    ret: float = math.inf
    output: Any = None
    status: str = "pending"  # ok | fail | unknown | pending
    id: int = 0
    meta: dict = field(default_factory=dict)

    def __str__(self) -> str:
        ret = "inf" if math.isinf(self.ret) else f"{self.ret:.3f}"
        return (f"[{self.call:.3f}, {ret}] {self.client} {self.kind}({self.key}"
                f"{'' if self.input is None else ', ' + repr(self.input)}) -> "
                f"{self.output!r} ({self.status})")


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The sequential model of one key: (is the recorded output legal, next state)."""
    if op.kind == GET:
        return op.output == state, state
    if op.kind == SET:
        return True, op.input
    expected, new = op.input
    if op.status == "unknown":  # either outcome is possible: the state decides
        return True, new if state == expected else state
    if op.output:
        return state == expected, new
    return state != expected, state


@dataclass
class Result:
    ok: bool | None  # None: budget exhausted
    key: str = ""
    detail: str = ""


class _Node:
    __slots__ = ("is_call", "match", "next", "op", "prev")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _lift(call: _Node) -> None:
    ret = call.match
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


JUNK = ("<a value nobody observed>",)


def _reduce(ops: list[Op], init: Any) -> tuple[list[Op], list[int]]:
    """The history with unobserved written values made JUNK, and for each operation the index
    of the unknown operation it must follow (-1: none), per the module notes."""
    observed = {init}
    for op in ops:
        if op.kind == GET:
            observed.add(op.output)
        elif op.kind == CAS:
            observed.add(op.input[0])
    reduced = []
    for op in ops:
        inp = op.input
        if op.kind == SET and inp not in observed:
            inp = JUNK
        elif op.kind == CAS and inp[1] not in observed:
            inp = (inp[0], JUNK)
        reduced.append(op if inp is op.input else Op(op.client, op.key, op.kind, inp, op.call, op.ret,
                                                     op.output, op.status, op.id))
    after = [-1] * len(ops)
    last_of_class: dict[tuple, int] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].call):
        op = reduced[i]
        if op.status == "unknown" and math.isinf(op.ret):
            cls = (op.kind, op.input)
            after[i] = last_of_class.get(cls, -1)
            last_of_class[cls] = i
    return reduced, after


def check_ops(ops: list[Op], init: Any = None, budget: int = 2_000_000) -> bool | None:
    """Is this single-key history linearizable? None if the budget ran out."""
    ops, after = _reduce(ops, init)
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((op.ret, 1, i))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Node(-1, False)
    prev = head
    calls: dict[int, _Node] = {}
    for _, kind, i in events:
        node = _Node(i, kind == 0)
        if kind == 0:
            calls[i] = node
        else:
            calls[i].match = node
        node.prev = prev
        prev.next = node
        prev = node
    state = init
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Node, Any]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return None
        if entry.is_call:
            before = after[entry.op]
            if before >= 0 and not linearized >> before & 1:
                entry = entry.next  # an interchangeable, earlier-called operation goes first
                continue
            legal, new_state = step(state, ops[entry.op])
            if legal:
                bits = linearized | (1 << entry.op)
                if (bits, new_state) not in seen:
                    seen.add((bits, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, bits
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False
            top, state = stack.pop()
            linearized &= ~(1 << top.op)
            _unlift(top)
            entry = top.next
    return True


def prepare(ops: list[Op]) -> dict[str, list[Op]]:
    """Drop what cannot matter (failed ops, unanswered reads); split by key."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        if op.status == "fail" or op.status == "pending" and op.kind == GET:
            continue
        if op.status in ("unknown", "pending"):
            if op.kind == GET:
                continue
            op = Op(op.client, op.key, op.kind, op.input, op.call, math.inf, None, "unknown", op.id)
        by_key.setdefault(op.key, []).append(op)
    return by_key


def check_history(ops: list[Op], budget: int = 2_000_000) -> Result:
    by_key = prepare(ops)
    for key in sorted(by_key):
        key_ops = by_key[key]
        verdict = check_ops(key_ops, None, budget)
        if verdict is not True:
            detail = "\n".join(str(o) for o in sorted(key_ops, key=lambda o: o.call))
            return Result(verdict, key, detail)
    return Result(True)
