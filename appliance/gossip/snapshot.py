"""Serf's member snapshot: the text log that lets a restarted agent rejoin its pool.

How it works
------------
The snapshot is an append-only text file of one record per line, Serf's format:

    alive: <name> <ip:port>     a member joined (or came back)
    not-alive: <name>           a member failed or left
    clock: <n>                  the member Lamport clock (written as clock - 1, like Serf)
    event-clock: <n>            the user-event Lamport clock
    query-clock: <n>            the query Lamport clock
    leave                       this agent left the pool gracefully
    # ...                       a comment

`replay(lines)` folds the lines into a `SnapshotState`: the members last seen alive, the three
clocks, and whether the agent left. After `leave` the alive members are forgotten and the clocks
zeroed (a member that left on purpose does not rejoin by itself, Serf's default without
RejoinAfterLeave). Unknown or malformed lines are counted and skipped (Serf logs and ignores
them; a torn last line after a crash must not stop the agent). `compacted(state)` is the short
form the file is rewritten to when it grows past `compaction_threshold(alive)`:
max(2 x 128 bytes x alive members, 128 KiB), as Serf does.

Pure functions only; the driver (driver.py) owns the file: it appends a line per member event and
a `clock:` line when the clocks moved (checked every 500 ms), rewrites the file compacted, and on
start replays it, restores the clocks and tries to rejoin the remembered members one at a time
in random order until one answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SNAPSHOT_FILE = "serf/local.snapshot"
MIN_COMPACT_BYTES = 128 * 1024
BYTES_PER_NODE = 128
FLUSH_INTERVAL_S = 0.5


@dataclass
class SnapshotState:
    alive: dict[str, str] = field(default_factory=dict)  # name -> "ip:port"
    clock: int = 0
    event_clock: int = 0
    left: bool = False
    bad_lines: int = 0
    query_clock: int = 0


def alive_line(name: str, address: str) -> str:
    return f"alive: {name} {address}\n"


def not_alive_line(name: str) -> str:
    return f"not-alive: {name}\n"


def clock_line(clock: int) -> str:
    return f"clock: {clock}\n"


def event_clock_line(clock: int) -> str:
    return f"event-clock: {clock}\n"


def query_clock_line(clock: int) -> str:
    return f"query-clock: {clock}\n"


LEAVE_LINE = "leave\n"


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 20 else None


def replay(lines: Iterable[str], rejoin_after_leave: bool = False) -> SnapshotState:
    state = SnapshotState()
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if not line or line.startswith("#"):
            continue
        if line.startswith("alive: "):
            name, sep, address = line[len("alive: "):].rpartition(" ")
            if not sep or not name or ":" not in address:
                state.bad_lines += 1
                continue
            state.alive[name] = address
            state.left = False
        elif line.startswith("not-alive: "):
            state.alive.pop(line[len("not-alive: "):], None)
        elif line.startswith(("clock: ", "event-clock: ", "query-clock: ")):
            value = _number(line.split(":", 1)[1])
            if value is None:
                state.bad_lines += 1
            elif line.startswith("clock"):
                state.clock = value
            elif line.startswith("event"):
                state.event_clock = value
            else:
                state.query_clock = value
        elif line.startswith("coordinate: "):
            continue  # legacy coordinates
        elif line == "leave":
            state.left = True
            if not rejoin_after_leave:
                state.alive.clear()
                state.clock = state.event_clock = state.query_clock = 0
        else:
            state.bad_lines += 1
    return state


def compacted(state: SnapshotState) -> str:
    parts = [alive_line(name, address) for name, address in sorted(state.alive.items())]
    parts.append(clock_line(state.clock))
    parts.append(event_clock_line(state.event_clock))
    parts.append(query_clock_line(state.query_clock))
    if state.left:
        parts.append(LEAVE_LINE)
    return "".join(parts)


def compaction_threshold(alive: int) -> int:
    return max(2 * BYTES_PER_NODE * alive, MIN_COMPACT_BYTES)
