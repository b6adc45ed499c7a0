"""The snapshot archive of `GET/PUT /v1/snapshot` and `cairn snapshot save|restore|inspect` (sans-IO).

How it works
------------
An archive is a gzip-compressed tar file, laid out like Consul's:

    meta.json    {"Version": 1, "ID": "<term>-<index>-<unix ms>", "Index", "Term", "Size",
                  "Configuration": {"Servers": [{"ID", "Address", "Suffrage"}], "Index"},
                  "ConfigurationIndex", "Format": "cairn"}
    state.bin    the state store, as appliance/state/snapshot.py serialises it
    SHA256SUMS   "<sha256 hex>  <name>" per line, for meta.json and state.bin (sha256sum's format)

`build_archive` makes one from the state bytes and the Raft position they were taken at.
`read_archive` takes one apart and verifies it before anyone uses it: the gzip and tar framing,
exactly these three regular files, every checksum, the metadata's types, `Size` equal to the
length of state.bin, and a version it knows. Any failure is an `ArchiveError` with a text that
says what is wrong; nothing is restored from an archive that fails a check. The decompressed
size is bounded (`max_state_bytes`), so a small archive cannot expand into gigabytes.

The archive is self-consistent but not Consul's: Consul's state.bin is its own FSM's encoding,
which cairn does not read or write (docs/compatibility.md).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

ARCHIVE_VERSION = 1
META, STATE, SUMS = "meta.json", "state.bin", "SHA256SUMS"
_MEMBERS = (META, STATE, SUMS)
MAX_META_BYTES = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot be used; the text says why."""


@dataclass(frozen=True)
class ArchiveMeta:
    id: str
    index: int
    term: int
    version: int
    size: int
    configuration: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"Version": self.version, "ID": self.id, "Index": self.index, "Term": self.term,
                "Size": self.size, "Configuration": self.configuration,
                "ConfigurationIndex": self.configuration.get("Index", 0), "Format": "cairn"}


def snapshot_id(term: int, index: int, now_ms: int) -> str:
    """hashicorp/raft's snapshot name: term-index-milliseconds."""
    return f"{term}-{index}-{now_ms}"


def _sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in (META, STATE)).encode()


def build_archive(state: bytes, *, index: int, term: int, configuration: dict[str, Any], now_ms: int) -> bytes:
    """A gzip'd tar of meta.json, state.bin and SHA256SUMS (see the module docstring)."""
    meta = ArchiveMeta(snapshot_id(term, index, now_ms), index, term, ARCHIVE_VERSION, len(state), configuration)
    files = {META: json.dumps(meta.to_json(), indent=2).encode() + b"\n", STATE: state}
    files[SUMS] = _sums(files)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in _MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = now_ms // 1000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=now_ms // 1000)


def _gunzip(data: bytes, limit: int) -> bytes:
    if data[:2] != b"\x1f\x8b":
        raise ArchiveError("not a snapshot archive: the data is not gzip-compressed")
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as err:
        raise ArchiveError(f"corrupt snapshot archive: gzip: {err}") from None
    if len(out) > limit:
        raise ArchiveError(f"snapshot archive too large: more than {limit} bytes uncompressed")
    if not d.eof:
        raise ArchiveError("corrupt snapshot archive: gzip: unexpected end of data")
    return out


def _int(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    if type(value) is not int or value < 0:
        raise ArchiveError(f"corrupt snapshot archive: meta.json: {key} must be a non-negative integer")
    return value


def read_archive(data: bytes, *, max_state_bytes: int) -> tuple[ArchiveMeta, bytes]:
    """Verify and unpack an archive: (metadata, state bytes), or ArchiveError."""
    raw = _gunzip(data, max_state_bytes + MAX_META_BYTES + (64 << 10))
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if member.name not in _MEMBERS:
                    raise ArchiveError(f"corrupt snapshot archive: unexpected file {member.name!r}")
                if not member.isfile():
                    raise ArchiveError(f"corrupt snapshot archive: {member.name} is not a regular file")
                if member.name in files:
                    raise ArchiveError(f"corrupt snapshot archive: {member.name} appears twice")
                fh = tar.extractfile(member)
                files[member.name] = fh.read() if fh is not None else b""
    except tarfile.TarError as err:
        raise ArchiveError(f"corrupt snapshot archive: tar: {err}") from None
    for name in _MEMBERS:
        if name not in files:
            raise ArchiveError(f"corrupt snapshot archive: {name} is missing")
    expected = _parse_sums(files[SUMS])
    for name in (META, STATE):
        digest = hashlib.sha256(files[name]).hexdigest()
        if expected.get(name) != digest:
            raise ArchiveError(f"snapshot archive failed verification: SHA256 of {name} does not match SHA256SUMS")
    try:
        meta = json.loads(files[META])
    except (ValueError, UnicodeDecodeError) as err:
        raise ArchiveError(f"corrupt snapshot archive: meta.json: {err}") from None
    except RecursionError:  # json's decoder recurses once per nested array or object
        raise ArchiveError("corrupt snapshot archive: meta.json nests too deeply") from None
    if not isinstance(meta, dict):
        raise ArchiveError("corrupt snapshot archive: meta.json is not an object")
    version = _int(meta, "Version")
    if version != ARCHIVE_VERSION:
        raise ArchiveError(f"unsupported snapshot archive version {version} (this build reads {ARCHIVE_VERSION})")
    size = _int(meta, "Size")
    if size != len(files[STATE]):
        raise ArchiveError(f"corrupt snapshot archive: state.bin is {len(files[STATE])} bytes, meta.json says {size}")
    if size > max_state_bytes:
        raise ArchiveError(f"snapshot too large: {size} bytes of state, at most {max_state_bytes} can be restored")
    conf = meta.get("Configuration") or {}
    if not isinstance(conf, dict) or not isinstance(meta.get("ID", ""), str):
        raise ArchiveError("corrupt snapshot archive: meta.json has a bad ID or Configuration")
    return ArchiveMeta(meta.get("ID", ""), _int(meta, "Index"), _int(meta, "Term"), version, size, conf), files[STATE]


def _parse_sums(data: bytes) -> dict[str, str]:
    out = {}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ArchiveError("corrupt snapshot archive: SHA256SUMS is not text") from None
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ArchiveError(f"corrupt snapshot archive: bad SHA256SUMS line {line!r}")
        out[name] = digest.lower()
    return out
