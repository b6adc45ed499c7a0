"""Inputs the decoder fuzzers found that broke a decoder's contract, kept as plain tests.

Each one raised something its decoder does not declare (or would have killed a caller); the fix
is in the decoder, and the test pins the declared outcome.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zlib
from pathlib import Path

import msgpack
import pytest

from appliance.config import ConfigError, hcl
from appliance.config.loader import load_file
from appliance.events import EventError, UserEventRecord
from appliance.raft.archive import ArchiveError, read_archive
from appliance.raft.messages import decode_configuration
from appliance.raft.storage import (
    HARD_STATE,
    RESET,
    SNAP_MAGIC,
    FileStorage,
    StorageCorrupt,
    _record,
    _segment_header,
)
from appliance.raft.transport import RaftTransport
from appliance.rpc.frames import FrameError, Kind
from appliance.state.commands import InvalidCommand, validate
from appliance.state.snapshot import SnapshotError, foreign_text, restore


def test_a_user_event_whose_id_is_not_hex_is_refused_at_decode() -> None:
    # 36 characters but not a UUID: /v1/event/list reads its index from the hex and answered 500
    data = msgpack.packb({"ID": "\x00" * 36, "n": "deploy", "v": 1}, use_bin_type=True)
    with pytest.raises(EventError, match="bad ID"):
        UserEventRecord.decode(data)
    for bad in ("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "0b5b3c8e-2f6c-4e1d-9a8b-7c6d5e4f3a2\u0661"):
        with pytest.raises(EventError, match="bad ID"):
            UserEventRecord.decode(msgpack.packb({"ID": bad, "n": "x"}, use_bin_type=True))
    ok = UserEventRecord.decode(msgpack.packb({"ID": "0B5B3C8E-2f6c-4e1d-9a8b-7c6d5e4f3a21", "n": "x"}))
    assert ok.name == "x"


def test_a_hello_listing_a_server_that_is_not_a_pair_is_a_frame_error() -> None:
    # an empty string (or list) among the servers raised IndexError, which the listener does not
    # count as garbage: the connection's task died with a traceback
    class Driver:
        node_id, address = "s1", "127.0.0.1:8300"

        def has_state(self) -> bool:
            return False

    transport = RaftTransport(Driver(), bind="127.0.0.1", port=0, bootstrap_expect=3)
    for bad in ("", [], ["s2"], ["s2", "a", "b"], 7):
        with pytest.raises(FrameError, match="not \\[id, address\\]"):
            transport._handle([Kind.HELLO, {"id": "s2", "addr": "127.0.0.2:8300", "servers": [bad]}])
    transport._handle([Kind.HELLO, {"id": "s2", "addr": "127.0.0.2:8300", "servers": [["s3", "127.0.0.3:8300"]]}])
    for short in ([Kind.HELLO], [Kind.HELLO, {}, {}]):  # IndexError for the first before
        with pytest.raises(ValueError):
            transport._handle(short)
    assert transport.known["s3"] == "127.0.0.3:8300"


@pytest.mark.parametrize("text", ["a = " + "[" * 5000, "a = " + "{b = " * 3000, "a " + "x { " * 2000])
def test_deeply_nested_hcl_is_an_hcl_error(text: str) -> None:
    # RecursionError before: the reader is recursive descent
    with pytest.raises(hcl.HCLError, match="nest deeper than 100 levels"):
        hcl.loads(text)
    deepest: list[object] = []
    for _ in range(99):
        deepest = [deepest]
    assert hcl.loads("a = " + "[" * 100 + "]" * 100) == {"a": deepest}


def test_deeply_nested_json_configuration_is_a_config_error(tmp_path: Path) -> None:
    # json.loads raises RecursionError, which the loader let through
    path = tmp_path / "deep.json"
    path.write_text('{"node_meta": ' + "[" * 100_000)
    with pytest.raises(ConfigError, match="nest too deeply"):
        load_file(str(path), "", [])


@pytest.mark.parametrize("records", [
    [[3, None]],  # START without (index, term): TypeError before
    [[3, [0, 0]], [1, [1]]],  # ENTRY of one field: ValueError before
    [[3, [0, 0]], [1, [1, 1, 99, b""]]],  # an entry type this build does not know
    [[3, [0, 0]], [2, ["1", 0, 0]]],  # a hard state whose term is text (TypeError later, at load)
])
def test_a_wal_record_with_a_valid_crc_but_a_malformed_body_is_storage_corrupt(tmp_path: Path, records) -> None:
    (tmp_path / "wal").mkdir()
    segment = _segment_header(1) + b"".join(_record(kind, body) for kind, body in records)
    (tmp_path / "wal" / f"{1:020d}-{1:016x}.wal").write_bytes(segment)
    storage = FileStorage(tmp_path, sync=False)
    with pytest.raises(StorageCorrupt, match="malformed record|unknown entry type"):
        storage.load()
    storage.close()


def test_a_snapshot_file_whose_metadata_is_not_a_map_is_skipped_as_corrupt(tmp_path: Path) -> None:
    # a checksum-valid snapshot file with nil metadata raised TypeError out of load()
    (tmp_path / "wal").mkdir()
    (tmp_path / "snapshots").mkdir()
    segment = _segment_header(1) + _record(RESET, [5, 2]) + _record(HARD_STATE, [2, "", 5])
    (tmp_path / "wal" / f"{1:020d}-{1:016x}.wal").write_bytes(segment)
    body = struct.pack("<I", 1) + b"\xc0" + b"state"
    blob = SNAP_MAGIC + b"\x01" + struct.pack("<I", zlib.crc32(body)) + body
    (tmp_path / "snapshots" / f"{5:020d}-{2:020d}.snap").write_bytes(blob)
    storage = FileStorage(tmp_path, sync=False)
    with pytest.raises(StorageCorrupt, match="no usable snapshot: .*malformed snapshot metadata"):
        storage.load()
    storage.close()


def _state(**tables: object) -> bytes:
    doc = {"last_index": 1, "nodes": [], "services": [], "checks": [], "kv": [], "tombstones": {},
           "watch_index": {}, **tables}
    return b"\x01" + msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("tables", [
    {"nodes": [{"Node": None}]},  # AttributeError before
    {"coordinates": [{"Node": 5}]},  # likewise
    {"nodes": [["n1"]]},  # TypeError before (now the same SnapshotError)
])
def test_a_state_snapshot_with_tables_of_the_wrong_shape_is_a_snapshot_error(tables: dict[str, object]) -> None:
    with pytest.raises(SnapshotError, match="corrupt snapshot"):
        restore(_state(**tables))


def test_foreign_text_reads_a_snapshot_nested_hundreds_deep() -> None:
    # the check PUT /v1/snapshot runs recursed once per level: RecursionError (a 500) before
    deep: object = "\udcff"
    for _ in range(500):
        deep = [deep]
    store = restore(b"\x01" + msgpack.packb({"last_index": 1, "nodes": [], "services": [], "checks": [], "kv": [],
                                              "tombstones": {}, "watch_index": {}, "autopilot": {"x": deep}},
                                             use_bin_type=True, unicode_errors="surrogateescape"))
    assert foreign_text(store) == "autopilot"


def test_an_archive_whose_meta_json_nests_too_deeply_is_an_archive_error() -> None:
    # the archive carries its own SHA256SUMS, so any meta.json reaches json.loads: RecursionError before
    meta = b'{"Version": 1, "Size": ' + b"[" * 5000
    files = {"meta.json": meta, "state.bin": b"\x01",
             "SHA256SUMS": b"".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n".encode()
                                    for n, b in (("meta.json", meta), ("state.bin", b"\x01")))}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with pytest.raises(ArchiveError, match="meta.json nests too deeply"):
        read_archive(gzip.compress(raw.getvalue()), max_state_bytes=1 << 20)


# Validation gaps the FSM fuzzer found (fsm.apply's ApplyFailed outcome): the command passes
# `validate`, its handler then fails and the FSM skips the entry on every replica. Not a crash (the
# FSM declares that outcome), but the command should be refused before the log.
def test_a_txn_service_whose_id_is_a_list_is_refused_by_validation() -> None:
    with pytest.raises(InvalidCommand):
        validate({"Type": "txn", "Ops": [{"Service": {"Verb": "set", "Node": "n9",
                                                      "Service": {"ID": [None, "ok"], "Service": "web"}}}]})


def test_a_prepared_query_whose_session_is_a_list_is_refused_by_validation() -> None:
    query = {"ID": "q-1", "Name": "q", "Session": [None, 10], "Token": "",
             "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
             "Service": {"Service": "web", "Failover": {"NearestN": 0, "Datacenters": None, "Targets": None},
                         "OnlyPassing": False, "IgnoreCheckIDs": None, "Near": "", "Tags": ["a"], "NodeMeta": {},
                         "ServiceMeta": None, "Peer": "", "Connect": {"Enabled": False}},
             "DNS": {"TTL": ""}}
    with pytest.raises(InvalidCommand):
        validate({"Type": "prepared_query", "Op": "set", "Query": query})


@pytest.mark.parametrize("data", [b"\x01\x00", b"\x01\x91\x00", b"\x01\x91\x92\xa1a\xa1b", b"\x01\xa3abc"])
def test_a_configuration_that_is_not_a_list_of_servers_is_a_value_error(data: bytes) -> None:
    # TypeError before ('int' object is not iterable), which a snapshot file's reader did not expect
    with pytest.raises(ValueError, match="not a list of \\[id, address, voter\\]"):
        decode_configuration(data)


def test_a_state_snapshot_whose_acl_bootstrap_index_is_infinite_is_a_snapshot_error() -> None:
    # int(inf) in the ACL table's loader raised OverflowError out of restore
    with pytest.raises(SnapshotError, match="OverflowError"):
        restore(_state(acl={"bootstrap": float("inf")}))
