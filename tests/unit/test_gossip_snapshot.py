"""Serf's member snapshot format (appliance/gossip/snapshot.py; reference/gossip-notes.md §8.8).

Rules: `alive:` and `not-alive:` lines track the members last seen alive; `clock:` and
`event-clock:` the Lamport clocks; `leave` forgets the members and zeroes the clocks (no rejoin
after a graceful leave, unless rejoin_after_leave); comments, legacy `coordinate:` lines and
`query-clock:` are skipped; garbage and a torn last line are counted, never fatal. Compaction
keeps the same state in fewer lines once the file passes max(2 x 128 B x members, 128 KiB).
"""

from __future__ import annotations

from hypothesis import given, strategies as st

from appliance.gossip.snapshot import (
    alive_line,
    clock_line,
    compacted,
    compaction_threshold,
    event_clock_line,
    not_alive_line,
    replay,
)


def test_replay_tracks_alive_members_and_clocks():
    lines = ["# written by cairn\n", alive_line("a", "10.0.0.1:8301"), alive_line("b", "10.0.0.2:8301"),
             clock_line(4), not_alive_line("a"), alive_line("c", "10.0.0.3:8301"), event_clock_line(9),
             "coordinate: legacy\n", "query-clock: 3\n", clock_line(7)]
    state = replay(lines)
    assert state.alive == {"b": "10.0.0.2:8301", "c": "10.0.0.3:8301"}
    assert (state.clock, state.event_clock, state.left, state.bad_lines) == (7, 9, False, 0)
    assert replay(compacted(state).splitlines(keepends=True)) == state


def test_leave_forgets_members_unless_rejoin_after_leave():
    lines = [alive_line("b", "10.0.0.2:8301"), clock_line(5), "leave\n"]
    left = replay(lines)
    assert left.left and left.alive == {} and left.clock == 0
    kept = replay(lines, rejoin_after_leave=True)
    assert kept.left and kept.alive == {"b": "10.0.0.2:8301"} and kept.clock == 5
    # an alive line after the leave (the agent was started again and joined) clears the flag
    assert not replay([*lines, alive_line("b", "10.0.0.2:8301")]).left


def test_garbage_and_a_torn_last_line_are_skipped():
    state = replay([alive_line("b", "10.0.0.2:8301"), "clock: x\n", "what is this\n", "alive: broken\n",
                    "alive: c 10.0"])
    assert state.alive == {"b": "10.0.0.2:8301"} and state.bad_lines == 4


@given(st.lists(st.text(max_size=40), max_size=30))
def test_any_text_replays_without_raising(lines):
    replay(lines)


def test_compaction_threshold():
    assert compaction_threshold(0) == 128 * 1024
    assert compaction_threshold(1000) == 256_000
