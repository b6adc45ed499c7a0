"""Durable Raft storage under `data_dir/raft`: a segmented write-ahead log and snapshot files.

The Raft driver (driver.py) calls `load()` once at start, `save()` for every Ready and
`save_snapshot()` after `RaftCore.compact()`, the last two in a worker thread.

How it works
------------
**The WAL** is a sequence of segment files `wal/<first index, 20 digits>-<sequence, 16 hex>.wal`.
Each begins with a 24-byte header (magic `CRNW`, format version, reserved bytes, the segment's
sequence number, CRC32 of the header) followed by records:

    u32 length | u32 crc32(type + payload) | u8 type | payload (msgpack, `length` bytes)

Record types (append-only): ENTRY (index, term, type, data), HARD_STATE (term, vote, commit),
START (the log starts after index/term: first record of every segment), COMPACT (entries up to an
index are covered by a snapshot), RESET (the log was replaced by an installed snapshot). Replay
is etcd-WAL style: an ENTRY at index i discards every entry >= i read before it (that is how a
conflicting suffix is truncated), COMPACT drops a prefix, RESET drops everything. The term, vote
and commit live in the same stream, so one fsync covers a whole Ready (group commit); every
segment starts with the current hard state, so old segments can be deleted once compacted.

`save(ready)` writes, in order, the snapshot file (if the Ready installs one: durable before the
WAL refers to it), then a RESET, the entries, the hard state, and fsyncs once. A segment that
grows past `segment_bytes` is closed and a new one started (file fsync, then directory fsync).

**Recovery** reads the segments in order. A bad record (short header, length past the end of the
file, CRC mismatch) in the *last* segment with nothing valid after it is a torn tail: everything
from it on was never acknowledged (nothing is sent before the fsync) and is cut off. A bad record
anywhere else, or one followed by a valid record, is corruption of acknowledged data: `load()`
raises `StorageCorrupt` with the file and offset, and the server must not start (fail-stop; it
rejoins under a new identity). An unknown format version, a gap in the indexes, or a log compacted
past the newest valid snapshot also refuse to start.

**Snapshots** are files `snapshots/<index, 20 digits>-<term, 20 digits>.snap`: magic `CRNS`,
version, CRC32 of the body, a msgpack metadata block (index, term, configuration and its index,
size) and the FSM state. They are written to a `.tmp` file, fsynced, renamed and the directory
fsynced; the newest `snapshots_retained` are kept. On load a snapshot whose checksum is wrong is
skipped for an older one if the log still covers the gap, and `.tmp` leftovers are deleted.

Assumptions (the fault model the simulator's disk implements): fsync persists what was written
before it; writes not yet synced may be lost or torn at the tail on a crash; an fsync error stops
the process (never retried and trusted).
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from .core import Compaction, Ready
from .messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    InitialState,
    Snapshot,
    decode_configuration,
    encode_configuration,
)

WAL_MAGIC = b"CRNW"
SNAP_MAGIC = b"CRNS"
FORMAT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<4sB3xQQ")  # magic, version, sequence, (reserved u64)
RECORD_HEADER = struct.Struct("<IIB")  # length, crc32, type
MAX_RECORD_BYTES = 512 << 20  # the server port's largest message: a restore entry is one record

ENTRY, HARD_STATE, START, COMPACT, RESET = 1, 2, 3, 4, 5


class StorageCorrupt(Exception):
    """The stored state cannot be trusted; the server must not start on it."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(kind: int, body: Any) -> bytes:
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    crc = zlib.crc32(bytes([kind]) + payload)
    return RECORD_HEADER.pack(len(payload), crc, kind) + payload


def _segment_header(sequence: int) -> bytes:
    head = SEGMENT_HEADER.pack(WAL_MAGIC, FORMAT_VERSION, sequence, 0)
    return head + struct.pack("<I", zlib.crc32(head))


SEGMENT_HEADER_BYTES = SEGMENT_HEADER.size + 4


_SHAPES = {ENTRY: (int, int, int, bytes), HARD_STATE: (int, str, int), START: (int, int), COMPACT: (int, int),
           RESET: (int, int)}


def _checked(kind: int, body: Any, where: str) -> Any:
    """A record's body if it has its type's shape (a CRC-valid record may still be malformed)."""
    shape = _SHAPES.get(kind)
    if shape is not None and (type(body) is not list or len(body) != len(shape)
                              or not all(type(v) is t for v, t in zip(body, shape, strict=True))):
        raise StorageCorrupt(f"{where}: malformed record of type {kind}")
    if kind == ENTRY and body[2] not in EntryType.__members__.values():
        raise StorageCorrupt(f"{where}: unknown entry type {body[2]}")
    return body


@dataclass
class _Replay:
    offset: int = 0
    offset_term: int = 0
    entries: list[Entry] | None = None
    hard_state: HardState = field(default_factory=HardState)

    def apply(self, kind: int, body: Any, where: str) -> None:
        first = self.entries is None
        if self.entries is None:
            if kind not in (START, RESET):
                raise StorageCorrupt(f"{where}: the log does not begin with a START record")
            self.entries = []
        if kind == ENTRY:
            index, term, etype, data = body
            entry = Entry(index, term, EntryType(etype), data)
            last = self.offset + len(self.entries)
            if index <= self.offset:
                raise StorageCorrupt(f"{where}: entry {index} at or below the log start {self.offset}")
            if index > last + 1:
                raise StorageCorrupt(f"{where}: gap in the log: entry {index} after {last}")
            del self.entries[index - self.offset - 1:]
            self.entries.append(entry)
        elif kind == HARD_STATE:
            term, vote, commit = body
            self.hard_state = HardState(term, vote, commit)
        elif kind == START:  # first record of each segment: the log continues after (index, term)
            index, term = body
            if first:
                self.offset, self.offset_term = index, term
            elif index != self.offset + len(self.entries):
                raise StorageCorrupt(f"{where}: segment starts after {index}, the log ends at "
                                     f"{self.offset + len(self.entries)}")
        elif kind == RESET:  # a snapshot was installed: it replaces the whole log
            index, term = body
            self.offset, self.offset_term, self.entries = index, term, []
        elif kind == COMPACT:
            index, term = body
            if index > self.offset:
                del self.entries[: min(index - self.offset, len(self.entries))]
                self.offset, self.offset_term = index, term
        else:
            raise StorageCorrupt(f"{where}: unknown record type {kind}")


class FileStorage:
    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 64 << 20,
                 snapshots_retained: int = 2, sync: bool = True) -> None:
        self.dir = Path(directory)
        self.wal_dir = self.dir / "wal"
        self.snap_dir = self.dir / "snapshots"
        self.segment_bytes = segment_bytes
        self.snapshots_retained = max(1, snapshots_retained)
        self.sync = sync
        self._file: BinaryIO | None = None
        self._segment_path: Path | None = None
        self._sequence = 0
        self._hard_state = HardState()
        self._offset = (0, 0)  # (index, term) the log starts after
        self._last = (0, 0)  # last index/term in the log

    # ------------------------------------------------------------------ recovery

    def load(self) -> InitialState:
        """Read everything back (creating an empty store the first time)."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.snap_dir.mkdir(parents=True, exist_ok=True)
        replay = _Replay()
        segments = self._segments()
        for i, path in enumerate(segments):
            self._replay_segment(path, replay, last=i == len(segments) - 1)
        entries = replay.entries or []
        snapshot = self._load_snapshot(replay.offset)
        if replay.offset > 0 and (snapshot is None or snapshot.index < replay.offset):
            raise StorageCorrupt(f"the log starts after index {replay.offset} but no valid snapshot covers it")
        self._hard_state = replay.hard_state
        self._offset = (replay.offset, replay.offset_term)
        self._last = (entries[-1].index, entries[-1].term) if entries else self._offset
        segments = self._segments()
        if segments:
            self._sequence = int(segments[-1].stem.split("-")[1], 16)
            self._segment_path = segments[-1]
            self._file = open(segments[-1], "ab")  # noqa: SIM115 - kept open for appends
        else:
            self._rotate()
        last_index = max(self._last[0], snapshot.index if snapshot else 0)
        if replay.hard_state.commit > last_index:
            raise StorageCorrupt(f"commit index {replay.hard_state.commit} is past the last entry {last_index}")
        return InitialState(replay.hard_state, snapshot, tuple(entries))

    def _segments(self) -> list[Path]:
        return sorted(self.wal_dir.glob("*.wal"), key=lambda p: int(p.stem.split("-")[1], 16))

    def _replay_segment(self, path: Path, replay: _Replay, last: bool) -> None:
        data = path.read_bytes()
        head = data[:SEGMENT_HEADER_BYTES]
        if len(head) < SEGMENT_HEADER_BYTES:
            if last:  # crash while creating the segment: nothing was acknowledged in it
                path.unlink()
                return
            raise StorageCorrupt(f"{path.name}: truncated segment header")
        magic, version, _, _ = SEGMENT_HEADER.unpack(head[: SEGMENT_HEADER.size])
        (crc,) = struct.unpack("<I", head[SEGMENT_HEADER.size:])
        if magic != WAL_MAGIC or crc != zlib.crc32(head[: SEGMENT_HEADER.size]):
            raise StorageCorrupt(f"{path.name}: not a cairn WAL segment (bad header)")
        if version != FORMAT_VERSION:
            raise StorageCorrupt(f"{path.name}: WAL format version {version}, this build reads {FORMAT_VERSION}")
        pos = SEGMENT_HEADER_BYTES
        while pos < len(data):
            record = self._read_record(data, pos)
            if record is None:
                if last and not self._valid_record_after(data, pos):
                    with open(path, "r+b") as f:  # torn tail: never acknowledged, cut it off
                        f.truncate(pos)
                        f.flush()
                        if self.sync:
                            os.fsync(f.fileno())
                    return
                raise StorageCorrupt(f"{path.name}: corrupt record at offset {pos}")
            kind, body, size = record
            where = f"{path.name}@{pos}"
            replay.apply(kind, _checked(kind, body, where), where)
            pos += size

    @staticmethod
    def _read_record(data: bytes, pos: int) -> tuple[int, Any, int] | None:
        if pos + RECORD_HEADER.size > len(data):
            return None
        length, crc, kind = RECORD_HEADER.unpack_from(data, pos)
        end = pos + RECORD_HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            return None
        payload = data[pos + RECORD_HEADER.size:end]
        if zlib.crc32(bytes([kind]) + payload) != crc:
            return None
        try:
            body = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException):
            return None
        return kind, body, end - pos

    def _valid_record_after(self, data: bytes, pos: int) -> bool:
        """Is there a valid record anywhere after a bad one? Then it is not a torn tail."""
        for start in range(pos + 1, len(data) - RECORD_HEADER.size + 1):
            if self._read_record(data, start) is not None:
                length = RECORD_HEADER.unpack_from(data, start)[0]
                if length > 0:
                    return True
        return False

    # ------------------------------------------------------------------ writing

    def _write(self, records: list[bytes]) -> None:
        blob = b"".join(records)
        f = self._file
        assert f is not None, "storage is closed"
        f.write(blob)
        f.flush()
        if self.sync:
            os.fsync(f.fileno())

    def _rotate(self, reset: Snapshot | None = None) -> None:
        """Start a new segment. It begins with START (the log continues after the current last
        entry) or, when a snapshot was installed, RESET; then the current hard state."""
        if self._file is not None:
            self._file.close()
        self._sequence += 1
        if reset is not None:
            first = _record(RESET, [reset.index, reset.term])
            after = reset.index
        else:
            first = _record(START, list(self._last))
            after = self._last[0]
        path = self.wal_dir / f"{after + 1:020d}-{self._sequence:016x}.wal"
        hs = self._hard_state
        with open(path, "wb") as f:
            f.write(_segment_header(self._sequence) + first + _record(HARD_STATE, [hs.term, hs.vote, hs.commit]))
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        if self.sync:
            _fsync_dir(self.wal_dir)
        self._segment_path = path
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for appends

    def bootstrap(self, state: InitialState) -> None:
        """Persist the state a new cluster starts from (messages.bootstrap_state)."""
        records = [_record(ENTRY, [e.index, e.term, int(e.type), e.data]) for e in state.entries]
        hs = state.hard_state
        records.append(_record(HARD_STATE, [hs.term, hs.vote, hs.commit]))
        self._hard_state = hs
        if state.entries:
            self._last = (state.entries[-1].index, state.entries[-1].term)
        self._write(records)

    def save(self, rd: Ready) -> None:
        """Make a Ready's snapshot, entries and hard state durable (one WAL fsync)."""
        if rd.snapshot is not None:
            # The snapshot file is durable before the WAL says the log was replaced by it; the
            # new segment starts with RESET, and the older ones are obsolete.
            self._write_snapshot_file(rd.snapshot)
            self._offset = self._last = (rd.snapshot.index, rd.snapshot.term)
            self._rotate(reset=rd.snapshot)
            assert self._segment_path is not None
            self._delete_segments_before(self._segment_path)
        records = []
        for e in rd.entries:
            records.append(_record(ENTRY, [e.index, e.term, int(e.type), e.data]))
            self._last = (e.index, e.term)
        if rd.hard_state is not None:
            self._hard_state = rd.hard_state
            hs = rd.hard_state
            records.append(_record(HARD_STATE, [hs.term, hs.vote, hs.commit]))
        if records:
            self._write(records)
        assert self._file is not None
        if self._file.tell() >= self.segment_bytes:
            self._rotate()

    def save_snapshot(self, compaction: Compaction) -> None:
        """After RaftCore.compact(): the snapshot file first (durable), then the log prefix goes."""
        snap = compaction.snapshot
        self._write_snapshot_file(snap)
        to = compaction.compact_to
        if to <= self._offset[0]:
            return
        term = snap.term if to == snap.index else 0
        self._offset = (to, term)
        self._write([_record(COMPACT, [to, term])])
        segments = self._segments()
        for path, nxt in itertools.pairwise(segments):
            if int(nxt.stem.split("-")[0]) - 1 <= to:  # everything in `path` is <= to
                path.unlink()
        if self.sync:
            _fsync_dir(self.wal_dir)

    def _delete_segments_before(self, keep: Path) -> None:
        for path in self._segments():
            if path != keep:
                path.unlink()
        if self.sync:
            _fsync_dir(self.wal_dir)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ------------------------------------------------------------------ snapshots

    def _write_snapshot_file(self, snap: Snapshot) -> None:
        meta = msgpack.packb({"index": snap.index, "term": snap.term,
                              "configuration": encode_configuration(snap.configuration),
                              "configuration_index": snap.configuration_index,
                              "size": len(snap.data)}, use_bin_type=True)
        body = struct.pack("<I", len(meta)) + meta + snap.data
        blob = SNAP_MAGIC + bytes([FORMAT_VERSION]) + struct.pack("<I", zlib.crc32(body)) + body
        final = self.snap_dir / f"{snap.index:020d}-{snap.term:020d}.snap"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.sync:
            _fsync_dir(self.snap_dir)
        for old in sorted(self.snap_dir.glob("*.snap"))[: -self.snapshots_retained]:
            old.unlink()

    @staticmethod
    def read_snapshot_file(path: Path) -> Snapshot:
        blob = path.read_bytes()
        if blob[:4] != SNAP_MAGIC or len(blob) < 13:
            raise StorageCorrupt(f"{path.name}: not a cairn snapshot")
        if blob[4] != FORMAT_VERSION:
            raise StorageCorrupt(f"{path.name}: snapshot format version {blob[4]}, this build reads {FORMAT_VERSION}")
        (crc,) = struct.unpack_from("<I", blob, 5)
        body = blob[9:]
        if zlib.crc32(body) != crc:
            raise StorageCorrupt(f"{path.name}: snapshot checksum mismatch")
        (meta_len,) = struct.unpack_from("<I", body, 0)
        meta = msgpack.unpackb(body[4:4 + meta_len], raw=False)
        if (type(meta) is not dict or type(meta.get("configuration")) is not bytes
                or not all(type(meta.get(k)) is int for k in ("index", "term", "configuration_index", "size"))):
            raise StorageCorrupt(f"{path.name}: malformed snapshot metadata")
        data = body[4 + meta_len:]
        if len(data) != meta["size"]:
            raise StorageCorrupt(f"{path.name}: snapshot size {len(data)}, expected {meta['size']}")
        conf: Configuration = decode_configuration(meta["configuration"])
        return Snapshot(meta["index"], meta["term"], conf, meta["configuration_index"], data)

    def _load_snapshot(self, log_offset: int) -> Snapshot | None:
        for tmp in self.snap_dir.glob("*.tmp"):
            tmp.unlink()  # a crash while writing: the rename never happened
        problems = []
        for path in sorted(self.snap_dir.glob("*.snap"), reverse=True):
            try:
                snap = self.read_snapshot_file(path)
            except (StorageCorrupt, ValueError, TypeError, KeyError, struct.error) as err:
                problems.append(str(err))
                continue
            if snap.index >= log_offset:
                return snap
            problems.append(f"{path.name}: older than the log start {log_offset}")
            break
        if problems and log_offset > 0:
            raise StorageCorrupt("no usable snapshot: " + "; ".join(problems))
        return None
