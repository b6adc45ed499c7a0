"""Majority arithmetic, pure functions (no state).

How it works
------------
A configuration's voters form one majority quorum (single-server changes never need joint
quorums: Raft thesis §4.1). Two questions are asked of it:

* `committed_index(voters, acked)`: the highest index that a majority has acknowledged. Sort the
  voters' acknowledged indexes in descending order; the value at position `n // 2` is held by at
  least `n // 2 + 1` voters. The leader still checks the entry's term (Raft §5.4.2) before
  committing. The same function computes the read-index round a majority has answered.
* `vote_result(voters, votes)`: WON once a majority granted, LOST once a majority cannot grant
  any more, PENDING otherwise.

An empty voter set commits nothing and never wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum


class VoteResult(Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[str], acked: Callable[[str], int]) -> int:
    values = sorted((acked(v) for v in voters), reverse=True)
    if not values:
        return 0
    return values[len(values) // 2]


def vote_result(voters: Iterable[str], votes: Mapping[str, bool]) -> VoteResult:
    voters = list(voters)
    if not voters:
        return VoteResult.LOST
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


def quorum_active(voters: Iterable[str], active: Callable[[str], bool]) -> bool:
    voters = list(voters)
    return bool(voters) and sum(1 for v in voters if active(v)) >= majority(len(voters))
