"""The member snapshot file on disk (`<data_dir>/serf/local.snapshot`), for the gossip driver.

How it works
------------
`MemberSnapshot` owns the file whose format and replay rules are in snapshot.py. `open()` replays
what is there (after a crash the last line may be torn: it is skipped) and keeps the file open
for appending. The driver then calls:

* `record(event, member)` for each Serf member event: `alive: <name> <ip:port>` on a join (or
  an update with a new address), `not-alive: <name>` on a failure, leave or reap;
* `tick(member_clock, event_clock, query_clock)` every 500 ms: a `clock:`, `event-clock:` or
  `query-clock:` line when a clock moved (written as clock - 1, as Serf does, so a restore
  witnesses it back), a flush, and a rewrite to the compact form once the file passes
  `compaction_threshold`;
* `left()` after a graceful leave: the `leave` line, flushed and fsynced, so the next start does
  not rejoin on its own;
* `close()` at shutdown (flush and fsync).

`previous()` lists the members to try rejoining at start (self excluded). A disk error is logged
once and the snapshot stops: losing it only costs the automatic rejoin, never the agent.
"""

from __future__ import annotations

import logging
import os
from typing import IO

from appliance.gossip.serf import Member
from appliance.gossip.snapshot import (
    LEAVE_LINE,
    SnapshotState,
    alive_line,
    clock_line,
    compacted,
    compaction_threshold,
    event_clock_line,
    not_alive_line,
    query_clock_line,
    replay,
)


class MemberSnapshot:
    def __init__(self, path: str, self_name: str, log: logging.Logger) -> None:
        self.path = path
        self.self_name = self_name
        self.log = log
        self.state = SnapshotState()
        self._fh: IO[str] | None = None
        self._size = 0
        self._last_clock = -1
        self._last_event_clock = -1
        self._last_query_clock = -1

    def open(self) -> SnapshotState:
        """Replay the file (if any) and open it for appending; the replayed state."""
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8", errors="replace") as fh:
                    self.state = replay(fh)
                if self.state.bad_lines:
                    self.log.warning("serf: ignored %d unreadable lines in the snapshot %s", self.state.bad_lines,
                                     self.path)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the agent's life
            self._size = self._fh.tell()
        except OSError as err:
            self._fail(err)
        replayed = SnapshotState(dict(self.state.alive), self.state.clock, self.state.event_clock,
                                 self.state.left, self.state.bad_lines, self.state.query_clock)
        self.state.left = False  # this run has not left (yet)
        return replayed

    def previous(self) -> list[tuple[str, str]]:
        """(name, "ip:port") of the members alive when the snapshot was last written."""
        return [(n, a) for n, a in sorted(self.state.alive.items()) if n != self.self_name]

    def record(self, kind: str, name: str, member: Member | None) -> None:
        if kind in ("member-join", "member-update") and member is not None:
            address = f"{member.addr}:{member.port}"
            if self.state.alive.get(name) != address:
                self.state.alive[name] = address
                self._append(alive_line(name, address))
        elif kind in ("member-leave", "member-failed", "member-reap") and name in self.state.alive:
            del self.state.alive[name]
            self._append(not_alive_line(name))

    def tick(self, member_clock: int, event_clock: int, query_clock: int = 1) -> None:
        clock, ev, query = max(0, member_clock - 1), max(0, event_clock - 1), max(0, query_clock - 1)
        if clock != self._last_clock:
            self._last_clock = self.state.clock = clock
            self._append(clock_line(clock))
        if ev != self._last_event_clock:
            self._last_event_clock = self.state.event_clock = ev
            self._append(event_clock_line(ev))
        if query != self._last_query_clock:
            self._last_query_clock = self.state.query_clock = query
            self._append(query_clock_line(query))
        if self._fh is None:
            return
        try:
            self._fh.flush()
            if self._size > compaction_threshold(len(self.state.alive)):
                self._compact(self._fh)
        except OSError as err:
            self._fail(err)

    def left(self) -> None:
        self.state.left = True
        self._append(LEAVE_LINE)
        self._sync()

    def close(self) -> None:
        self._sync()
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    # ------------------------------------------------------------------ file

    def _append(self, line: str) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(line)
            self._size += len(line)
        except OSError as err:
            self._fail(err)

    def _sync(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:
            self._fail(err)

    def _compact(self, fh_open: IO[str]) -> None:
        """Rewrite the file compacted; `fh_open` is the appending handle, replaced by a new one."""
        tmp = self.path + ".compact"
        with open(tmp, "w", encoding="utf-8") as fh:
            data = compacted(self.state)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fh_open.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = len(data)

    def _fail(self, err: OSError) -> None:
        self.log.error("serf: member snapshot %s disabled: %s", self.path, err)
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
        self._fh = None
