"""Lamport clock (Serf orders join/leave intents with one).

How it works: `time()` reads, `increment()` adds one and returns the new value, `witness(v)`
moves the clock past a value seen in a message (`v + 1` if `v >= current`). A clock starts at 1
after its first increment, so an LTime of 0 means "never".
"""

from __future__ import annotations


class LamportClock:
    __slots__ = ("_counter",)

    def __init__(self, start: int = 0) -> None:
        self._counter = start

    def time(self) -> int:
        return self._counter

    def increment(self) -> int:
        self._counter += 1
        return self._counter

    def witness(self, value: int) -> None:
        if value >= self._counter:
            self._counter = value + 1
