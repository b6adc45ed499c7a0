"""Hostile bytes where the server keeps its state: WAL segments, snapshot files and archives, the
state snapshot, and the FSM's log entries.

Declared outcomes:

* a WAL segment on disk (appliance/raft/storage.py `FileStorage.load`): the recovered state, a
  torn tail cut off, or `StorageCorrupt`; the same for a snapshot file the log relies on;
* a snapshot archive (appliance/raft/archive.py `read_archive`): its metadata and state, or
  `ArchiveError`;
* a state snapshot (appliance/state/snapshot.py `restore`, then `foreign_text` as
  `PUT /v1/snapshot` runs them): a store, or `SnapshotError`, `KeyError`, `TypeError` or
  `ValueError`, the errors its callers (the FSM's restore command, the snapshot handler) turn into
  a refusal;
* a log entry (appliance/state/fsm.py `apply_entry`, the codec of appliance/state/commands.py):
  applied, or refused with `UndecodableCommand`, `InvalidCommand` or another `CommandError`; never
  `ApplyFailed`, which says a command passed validation and then broke its handler.

Structure-aware inputs keep the framing valid (segment header, record lengths and CRCs, snapshot
CRC, tar and gzip with checksums recomputed) while the values inside are mutated.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import random
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import msgpack

from appliance.raft.archive import ArchiveError, build_archive, read_archive
from appliance.raft.messages import Configuration, Server, encode_configuration
from appliance.raft.storage import (
    COMPACT,
    ENTRY,
    HARD_STATE,
    RESET,
    SNAP_MAGIC,
    START,
    FileStorage,
    StorageCorrupt,
    _record,
    _segment_header,
)
from appliance.state.commands import CommandError, decode_command, encode_command, validate
from appliance.state.fsm import FSM, ApplyFailed
from appliance.state.snapshot import SnapshotError, foreign_text, restore, snapshot
from appliance.state.store import Store
from tests.fuzz.harness import Tally, Target, fuzz_tests, mutate_bytes, mutate_text, seed_tests
from tests.unit.test_fsm_commands import producer_commands

CONF = encode_configuration(Configuration((Server("s1", "127.0.0.1:8300"), Server("s2", "127.0.0.2:8300"))))
_TMP = Path(tempfile.mkdtemp(prefix="cairn-fuzz-storage-"))
atexit.register(shutil.rmtree, _TMP, True)

# ------------------------------------------------------------------------ the FSM and its snapshot

COMMANDS = producer_commands()
_fsm = FSM(Store())
for _i, _cmd in enumerate(COMMANDS[:-1], start=1):
    _fsm.apply(_i, _cmd)
STATE = snapshot(_fsm.store)
ENTRIES = [encode_command(c) for c in COMMANDS]


def _command(data: bytes) -> None:
    validate(decode_command(data))


def _apply(data: bytes) -> Tally | None:
    applied = FSM(restore(STATE)).apply_entry(len(COMMANDS) + 1, data)
    if isinstance(applied.result, ApplyFailed):  # validated, then broke its handler: skipped, counted
        return Tally("ApplyFailed")
    if isinstance(applied.result, CommandError):
        raise applied.result
    return None


def _applies(data: bytes) -> bool:
    try:
        return _apply(data) is None
    except CommandError:  # a precondition this state does not meet (an unknown session, say)
        return False


def _restore(data: bytes) -> None:
    foreign_text(restore(data))


def _unpacked(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")


def _packed(tree: Any) -> bytes:
    return msgpack.packb(tree, use_bin_type=True, unicode_errors="surrogateescape")


# ------------------------------------------------------------------------ archives

def _files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(zlib.decompress(data, 31)), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _tar(files: list[tuple[str, bytes, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, body in files:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
    return _gzip(raw.getvalue())


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=31)
    return c.compress(data) + c.flush()


def _mutate_archive(rng: random.Random, seed: bytes) -> bytes:
    """Meta, state or the member list mutated; SHA256SUMS recomputed; tar and gzip valid."""
    files = _files(seed)
    meta, state = files["meta.json"].decode(), files["state.bin"]
    op = rng.randrange(5)
    if op == 0:
        meta = mutate_text(rng, meta, [meta], ["{", "[", '"Size"', '"Version"', "-1", "1e400", "null", "\\ud800"])
    elif op == 1:
        doc = json.loads(meta)
        key = rng.choice([*doc, "Configuration"])
        doc[key] = rng.choice((None, -1, 2, "x", [], {}, 1 << 70, 1.5, True, {"Servers": "x"}))
        meta = json.dumps(doc)
    elif op == 2:
        state = mutate_bytes(rng, state, [STATE])
    elif op == 3:
        state = state[:rng.randrange(len(state) + 1)]  # meta.json's Size no longer matches
    members = [("meta.json", tarfile.REGTYPE, meta.encode("utf-8", "surrogatepass")),
               ("state.bin", tarfile.REGTYPE, state)]
    body = b"".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n".encode() for n, _, b in members)
    members.append(("SHA256SUMS", tarfile.REGTYPE, body))
    if op == 4:
        choice = rng.randrange(4)
        if choice == 0:
            members.append(("../evil", tarfile.REGTYPE, b"x"))
        elif choice == 1:
            members[1] = ("state.bin", tarfile.SYMTYPE, b"")
        elif choice == 2:
            members.append(members[0])
        else:
            del members[rng.randrange(3)]
    return _tar(members)


ARCHIVE = build_archive(STATE, index=40, term=3, configuration={"Servers": [{"ID": "s1"}], "Index": 1},
                        now_ms=1_700_000_000_000)

# ------------------------------------------------------------------------ the WAL and snapshot files

WAL_SEED = [[START, [0, 0]], [ENTRY, [1, 1, 5, CONF]], [HARD_STATE, [1, "s1", 1]],
            [ENTRY, [2, 1, 0, ENTRIES[0]]], [ENTRY, [3, 1, 1, b""]], [ENTRY, [3, 2, 0, ENTRIES[1]]],
            [HARD_STATE, [2, "", 3]]]
RESET_SEED = [[RESET, [5, 2]], [ENTRY, [6, 2, 0, ENTRIES[2]]], [COMPACT, [5, 2]], [HARD_STATE, [2, "s2", 6]]]


def _segment(records: Any) -> bytes:
    return _segment_header(1) + b"".join(_record(kind, body) for kind, body in records)


def _unsegment(data: bytes) -> list[Any]:
    out, pos = [], 28
    while pos < len(data):
        length, _, kind = struct.unpack_from("<IIB", data, pos)
        out.append([kind, msgpack.unpackb(data[pos + 9:pos + 9 + length], raw=False)])
        pos += 9 + length
    return out


def _snapshot_file(meta: Any, data: bytes = b"state") -> bytes:
    packed = _packed(meta)
    body = struct.pack("<I", len(packed)) + packed + data
    return SNAP_MAGIC + bytes([1]) + struct.pack("<I", zlib.crc32(body)) + body


SNAP_META = {"index": 5, "term": 2, "configuration": CONF, "configuration_index": 1, "size": 5}


def _load(segment: bytes, snap: bytes | None = None) -> None:
    directory = _TMP / f"node-{os.getpid()}"  # the long run forks workers after import
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "wal").mkdir(parents=True)
    (directory / "wal" / f"{1:020d}-{1:016x}.wal").write_bytes(segment)
    if snap is not None:
        (directory / "snapshots").mkdir()
        (directory / "snapshots" / f"{5:020d}-{2:020d}.snap").write_bytes(snap)
    storage = FileStorage(directory, sync=False)
    try:
        storage.load()
    finally:
        storage.close()


TARGETS = [
    Target("raft.wal", _load, (StorageCorrupt,), [_segment(WAL_SEED), _segment(WAL_SEED[:3])], _unsegment,
           _segment),
    Target("raft.snapshot_file", lambda d: _load(_segment(RESET_SEED), d), (StorageCorrupt,),
           [_snapshot_file(SNAP_META)], lambda d: msgpack.unpackb(d[13:-5], raw=False), _snapshot_file),
    Target("snapshot.archive", lambda d: read_archive(d, max_state_bytes=1 << 20), (ArchiveError,), [ARCHIVE],
           mutate=_mutate_archive),
    Target("state.snapshot", _restore, (SnapshotError, KeyError, TypeError, ValueError), [STATE],
           lambda d: msgpack.unpackb(d[1:], raw=False, unicode_errors="surrogateescape"),
           lambda t: b"\x01" + _packed(t)),
    Target("fsm.command", _command, (CommandError,), ENTRIES, _unpacked, _packed),
    Target("fsm.apply", _apply, (CommandError,), [e for e in ENTRIES if _applies(e)], _unpacked, _packed),
]

test_storage_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_storage_seeds_are_valid = seed_tests(TARGETS)
