"""appliance/raft/storage.py: the WAL and snapshot files, including torn and corrupt data
(raft-notes §7.3-7.5: truncate only a torn tail, fail-stop on anything else)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from appliance.raft.config import CoreConfig
from appliance.raft.core import Compaction, RaftCore, Ready
from appliance.raft.messages import (
    Configuration,
    Entry,
    HardState,
    Snapshot,
    bootstrap_state,
)
from appliance.raft.storage import FileStorage, StorageCorrupt


def ready(entries=(), hard_state=None, snapshot=None) -> Ready:
    return Ready(None, hard_state, snapshot, tuple(entries), (), (), (), ())


def entries(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(i, term, data=f"e{i}t{term}".encode()) for i in range(lo, hi + 1)]


def reopen(path: Path, **kw) -> tuple[FileStorage, object]:
    st = FileStorage(path, sync=False, **kw)
    return st, st.load()


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"), key=lambda p: int(p.stem.split("-")[1], 16))


def test_round_trip(tmp_path):
    st, state = reopen(tmp_path)
    assert state.entries == () and state.hard_state == HardState()
    st.save(ready(entries(1, 5, 1), HardState(1, "a", 3)))
    st.close()
    _, state = reopen(tmp_path)
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5]
    assert state.entries[2].data == b"e3t1"
    assert state.hard_state == HardState(1, "a", 3)


def test_conflicting_suffix_is_replaced(tmp_path):
    # Raft §5.3: entries written at an index discard everything stored from that index on.
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 5, 1), HardState(1, "", 2)))
    st.save(ready(entries(4, 4, 2), HardState(2, "b", 2)))
    st.close()
    _, state = reopen(tmp_path)
    assert [(e.index, e.term) for e in state.entries] == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_segments_rotate_and_compaction_deletes_old_ones(tmp_path):
    st, _ = reopen(tmp_path, segment_bytes=300)
    for i in range(1, 41):
        st.save(ready(entries(i, i, 1), HardState(1, "", i)))
    assert len(segments(tmp_path)) > 3
    snap = Snapshot(30, 1, Configuration.of("a"), 0, b"state@30")
    st.save_snapshot(Compaction(snap, 25))
    st.close()
    remaining = segments(tmp_path)
    assert all(int(p.stem.split("-")[0]) - 1 <= 40 for p in remaining)
    _, state = reopen(tmp_path)
    assert state.snapshot == snap
    assert state.entries[0].index <= 26 and state.entries[-1].index == 40
    assert state.hard_state.commit == 40


def test_torn_tail_is_truncated(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 3, 1), HardState(1, "", 3)))
    st.save(ready(entries(4, 6, 1), HardState(1, "", 6)))
    st.close()
    seg = segments(tmp_path)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # the last record (hard state) is cut in the middle
    _, state = reopen(tmp_path)
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5, 6]
    assert state.hard_state.commit == 3  # the torn batch's hard state never became durable
    assert seg.stat().st_size < len(data) - 7  # the torn bytes are gone for good


def test_zeroed_tail_is_a_torn_tail(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 2, 1), HardState(1, "", 2)))
    st.close()
    seg = segments(tmp_path)[-1]
    seg.write_bytes(seg.read_bytes() + b"\0" * 4096)
    _, state = reopen(tmp_path)
    assert len(state.entries) == 2


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_corruption_followed_by_valid_records_refuses_to_start(tmp_path):
    st, _ = reopen(tmp_path)
    for i in range(1, 6):
        st.save(ready(entries(i, i, 1), HardState(1, "", i)))
    st.close()
    seg = segments(tmp_path)[-1]
    _flip(seg, 60)  # inside an early record: acknowledged data, not a torn tail
    with pytest.raises(StorageCorrupt, match="corrupt record"):
        reopen(tmp_path)


def test_corruption_in_an_older_segment_refuses_to_start(tmp_path):
    st, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 20):
        st.save(ready(entries(i, i, 1), HardState(1, "", i)))
    st.close()
    first = segments(tmp_path)[0]
    data = first.read_bytes()
    first.write_bytes(data[:-3])  # even a "torn" end is corruption when a later segment exists
    with pytest.raises(StorageCorrupt):
        reopen(tmp_path)


def test_unknown_format_version_refuses_to_start(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 1, 1), HardState(1, "", 1)))
    st.close()
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[4] = 99
    seg.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="bad header|version"):
        reopen(tmp_path)


def test_commit_past_the_log_refuses_to_start(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 2, 1), HardState(1, "", 5)))
    st.close()
    with pytest.raises(StorageCorrupt, match="commit index 5"):
        reopen(tmp_path)


def test_snapshot_with_wrong_checksum_falls_back_or_refuses(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 10, 1), HardState(1, "", 10)))
    old = Snapshot(4, 1, Configuration.of("a"), 0, b"four")
    new = Snapshot(8, 1, Configuration.of("a"), 0, b"eight")
    st.save_snapshot(Compaction(old, 0))
    st.save_snapshot(Compaction(new, 3))
    st.close()
    snaps = sorted((tmp_path / "snapshots").glob("*.snap"))
    _flip(snaps[-1], len(snaps[-1].read_bytes()) - 1)
    (tmp_path / "snapshots" / "junk.tmp").write_bytes(b"half written")
    _, state = reopen(tmp_path)
    assert state.snapshot == old  # the log (from 4) still covers what the newer one held
    assert not list((tmp_path / "snapshots").glob("*.tmp"))
    _flip(snaps[0], len(snaps[0].read_bytes()) - 1)
    with pytest.raises(StorageCorrupt, match="no usable snapshot"):
        reopen(tmp_path)


def test_installed_snapshot_replaces_the_log(tmp_path):
    st, _ = reopen(tmp_path)
    st.save(ready(entries(1, 5, 1), HardState(1, "", 2)))
    snap = Snapshot(20, 3, Configuration.of("a", "b"), 7, b"twenty")
    st.save(ready(entries(21, 22, 3), HardState(3, "", 20), snapshot=snap))
    st.close()
    _, state = reopen(tmp_path)
    assert state.snapshot == snap
    assert [e.index for e in state.entries] == [21, 22]
    assert len(segments(tmp_path)) == 1


def test_a_core_restarts_from_its_files(tmp_path):
    # End to end: a single-voter core persisting every Ready, restarted from disk.
    cfg = CoreConfig(snapshot_threshold=5, trailing_logs=2)
    st, _ = reopen(tmp_path, segment_bytes=400)
    boot = bootstrap_state(Configuration.of("a"))
    st.bootstrap(boot)
    core = RaftCore("a", cfg, random.Random(1), boot)
    core.campaign()
    applied = []
    for i in range(12):
        core.propose(f"cmd{i}".encode())
        while core.has_ready():
            rd = core.ready()
            st.save(rd)
            applied.extend(e.data for e in rd.committed_entries if e.data.startswith(b"cmd"))
            core.advance(rd)
            if core.should_snapshot():
                st.save_snapshot(core.compact(core.log.applied, b"|".join(applied)))
    st.close()
    _, state = reopen(tmp_path, segment_bytes=400)
    again = RaftCore("a", cfg, random.Random(2), state)
    assert again.term == core.term and again.log.committed == core.log.committed
    assert again.log.last_index() == core.log.last_index()
    assert state.snapshot is not None and state.snapshot.index >= 10
    replayed = state.snapshot.data.split(b"|") + [e.data for e in state.entries
                                                   if e.index > state.snapshot.index and e.data]
    assert replayed == applied
