"""``cairn kv get|put|delete|export|import``: the key/value store (/v1/kv/<key>).

Values travel base64-encoded in the API's JSON; these verbs print and read raw bytes unless
``-base64`` is given. ``export`` writes Consul's interchange format, a JSON array of
``{"key", "flags", "value"}`` objects (value base64, TAB indent), and ``import`` reads it back.
The success and failure lines are Consul's (``Success! Data written to: k``,
``Error! No key exists at: k``, ...) because scripts match them.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from appliance.cli.flags import CliError, CliParser, UsageError, command, err, out, run_subcommand
from appliance.cli.format import columnize, go_json_dumps
from appliance.cli.http_client import ApiError, HTTPClient, add_http_flags, client_from_args

HELP = """\
Usage: cairn kv <subcommand> [options] [args]

  Reads and writes the key/value store: configuration, feature flags, locks.

    Write:             cairn kv put redis/config/connections 5
    Read:              cairn kv get redis/config/connections
    Read a tree:       cairn kv get -recurse redis/config
    Delete a tree:     cairn kv delete -recurse redis
    Back up and load:  cairn kv export redis > redis.json; cairn kv import @redis.json

Subcommands:
    delete    Removes data from the KV store
    export    Exports a tree from the KV store as JSON
    get       Retrieves or lists data from the KV store
    import    Imports a tree stored as JSON to the KV store
    put       Sets or updates data in the KV store

For help on a subcommand run: cairn kv <subcommand> -h
"""

MISSING_KEY = "Error! Missing KEY argument"


# ------------------------------------------------------------------------------------------
# pure helpers


def decode_value(entry: Mapping[str, Any]) -> bytes:
    raw = entry.get("Value")
    if not raw:
        return b""
    return base64.b64decode(raw)


def display_value(entry: Mapping[str, Any], *, as_base64: bool) -> bytes:
    if as_base64:
        return str(entry.get("Value") or "").encode()
    return decode_value(entry)


def detailed_block(entry: Mapping[str, Any], *, as_base64: bool) -> bytes:
    """The ``-detailed`` view of one entry (columnized name/value rows)."""
    value = display_value(entry, as_base64=as_base64).decode("utf-8", "replace")
    rows = [
        ["CreateIndex", str(entry.get("CreateIndex", 0))],
        ["Flags", str(entry.get("Flags", 0))],
        ["Key", str(entry.get("Key", ""))],
        ["LockIndex", str(entry.get("LockIndex", 0))],
        ["ModifyIndex", str(entry.get("ModifyIndex", 0))],
        ["Session", str(entry.get("Session") or "-")],
        ["Value", value],
    ]
    return columnize(rows).encode()


def export_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """API DirEntries -> the export format (lowercase keys, value base64, "" when empty)."""
    return [
        {"key": str(e.get("Key", "")), "flags": int(e.get("Flags") or 0), "value": str(e.get("Value") or "")}
        for e in entries
    ]


def format_export(entries: Iterable[Mapping[str, Any]]) -> str:
    return go_json_dumps(export_entries(entries), indent="\t")


def _field(m: Mapping[str, Any], name: str) -> Any:
    for k, v in m.items():
        if isinstance(k, str) and k.lower() == name:
            return v
    return None


def parse_import(text: str | bytes) -> list[tuple[str, int, bytes]]:
    """Export-format JSON -> (key, flags, raw value) triples (field names case-insensitive)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"Cannot unmarshal data: {exc}") from None
    if not isinstance(data, list):
        raise CliError("Cannot unmarshal data: expected a JSON array of {key, flags, value} objects")
    result = []
    for item in data:
        if not isinstance(item, Mapping):
            raise CliError("Cannot unmarshal data: expected a JSON array of {key, flags, value} objects")
        key = str(_field(item, "key") or "")
        flags = _field(item, "flags") or 0
        try:
            value = base64.b64decode(str(_field(item, "value") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise CliError(f"Error base 64 decoding value for key {key}") from None
        try:
            flags = int(flags)
        except (TypeError, ValueError):
            raise CliError(f"Invalid flags for key {key}: {flags!r}") from None
        result.append((key, flags, value))
    return result


def read_data_arg(arg: str | None, *, stdin_when_missing: bool = False) -> bytes:
    """A DATA argument: literal, ``@file``, ``-`` for stdin; missing -> empty (or stdin)."""
    if arg is None:
        return sys.stdin.buffer.read() if stdin_when_missing else b""
    if arg == "-":
        return sys.stdin.buffer.read()
    if arg.startswith("@"):
        path = arg[1:]
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise CliError(f"Failed to read file: {exc.strerror or exc}") from None
    return arg.encode("utf-8", "surrogateescape")  # argv bytes that are not UTF-8 stay as they are


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _kv_path(key: str) -> str:
    """The key's URL. A key is bytes: one from argv that is not UTF-8 arrives with a lone surrogate
    per such byte (Python decodes argv with "surrogateescape") and is sent as those bytes."""
    return "/v1/kv/" + urllib.parse.quote(key.encode("utf-8", "surrogateescape"), safe="/")


def shown(key: str) -> str:
    """A key for a message line: each byte that is not UTF-8 shown as U+FFFD, as the API renders it."""
    if key.isascii():
        return key
    return "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in key)


def _query_text(value: str) -> Any:
    """A query value from argv, sent as its bytes when it is not UTF-8 (urlencode quotes bytes as they are)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------------------
# verbs


def _parser(name: str, usage: str, description: str) -> CliParser:
    p = CliParser(f"cairn kv {name}", usage, description)
    add_http_flags(p)
    return p


def get(argv: list[str]) -> int:
    p = _parser("get", "cairn kv get [options] [KEY_OR_PREFIX]",
                "Prints the value at KEY, or lists keys and values under a prefix.")
    g = p.add_argument_group("Command Options")
    g.add_argument("-recurse", "--recurse", dest="recurse", action="store_true",
                   help="Print every key under the prefix as key:value.")
    g.add_argument("-keys", "--keys", dest="keys", action="store_true",
                   help="List the keys under the prefix, not their values.")
    g.add_argument("-separator", "--separator", dest="separator", default="/", metavar="<string>",
                   help="With -keys, roll keys up at this separator (empty lists all). Default '/'.")
    g.add_argument("-detailed", "--detailed", dest="detailed", action="store_true",
                   help="Print the entry's index, flags, lock and session details too.")
    g.add_argument("-base64", "--base64", dest="base64", action="store_true",
                   help="Print values base64-encoded.")
    args = p.parse(argv)
    if len(args.args) > 1:
        raise UsageError(f"Too many arguments (expected 1, got {len(args.args)})")
    key = args.args[0] if args.args else ""
    if not key and not (args.recurse or args.keys):
        raise UsageError(MISSING_KEY)
    client = client_from_args(args)

    if args.keys:
        resp = client.get(_kv_path(key), [("keys", ""), ("separator", _query_text(args.separator))], server=True,
                          allow_404=True)
        for k in (resp.json() or []) if resp.status != 404 else []:
            out(str(k))
        return 0

    if args.recurse:
        resp = client.get(_kv_path(key), [("recurse", "")], server=True, allow_404=True)
        entries = (resp.json() or []) if resp.status != 404 else []
        for i, entry in enumerate(entries):
            if args.detailed:
                if i:
                    _write_bytes(b"")
                _write_bytes(detailed_block(entry, as_base64=args.base64))
            else:
                _write_bytes(str(entry.get("Key", "")).encode() + b":" + display_value(entry, as_base64=args.base64))
        return 0

    resp = client.get(_kv_path(key), server=True, allow_404=True)
    entries = (resp.json() or []) if resp.status != 404 else []
    if not entries:
        err(f"Error! No key exists at: {shown(key)}")
        return 1
    entry = entries[0]
    if args.detailed:
        _write_bytes(detailed_block(entry, as_base64=args.base64))
    else:
        _write_bytes(display_value(entry, as_base64=args.base64))
    return 0


def _bool_answer(body: bytes) -> bool:
    return body.strip() == b"true"


def put(argv: list[str]) -> int:
    p = _parser("put", "cairn kv put [options] KEY [DATA]",
                "Writes DATA at KEY. DATA may be given literally, as @file to read a file, or as -\n"
                "to read stdin; without DATA the value is empty.")
    g = p.add_argument_group("Command Options")
    g.add_argument("-flags", "--flags", dest="flags", type=int, default=0, metavar="<uint>",
                   help="Opaque unsigned integer stored with the value.")
    g.add_argument("-cas", "--cas", dest="cas", action="store_true",
                   help="Check-and-set: write only if the key's modify index is -modify-index "
                   "(0: only if the key does not exist).")
    g.add_argument("-modify-index", "--modify-index", dest="modify_index", type=int, default=0,
                   metavar="<uint>", help="The modify index -cas compares with.")
    g.add_argument("-base64", "--base64", dest="base64", action="store_true",
                   help="DATA is base64-encoded; decode it before writing.")
    g.add_argument("-acquire", "--acquire", dest="acquire", action="store_true",
                   help="Take the lock on KEY for -session while writing.")
    g.add_argument("-release", "--release", dest="release", action="store_true",
                   help="Release the lock -session holds on KEY while writing.")
    g.add_argument("-session", "--session", dest="session", default="", metavar="<id>",
                   help="Session ID for -acquire and -release.")
    args = p.parse(argv)
    if not args.args:
        raise UsageError(MISSING_KEY)
    if len(args.args) > 2:
        raise UsageError(f"Too many arguments (expected 1 or 2, got {len(args.args)})")
    key = args.args[0]
    if (args.acquire or args.release) and not args.session:
        raise UsageError("Error! Missing -session (required with -acquire and -release)")
    if args.acquire and args.release:
        raise UsageError("Error! Cannot use -acquire and -release together")
    if args.cas and (args.acquire or args.release):
        raise UsageError("Error! Cannot use -cas with -acquire or -release")
    if args.flags < 0 or args.modify_index < 0:
        raise UsageError("Error! -flags and -modify-index must not be negative")
    data = read_data_arg(args.args[1] if len(args.args) > 1 else None)
    if args.base64:
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CliError(f"Error! Cannot parse base64 data: {exc}") from None

    params: list[tuple[str, str]] = []
    if args.flags:
        params.append(("flags", str(args.flags)))
    if args.cas:
        params.append(("cas", str(args.modify_index)))
    if args.acquire:
        params.append(("acquire", args.session))
    if args.release:
        params.append(("release", args.session))
    client = client_from_args(args)
    try:
        resp = client.put(_kv_path(key), params, data, server=True)
    except ApiError as exc:
        err(f"Error! Failed writing data: {exc}")
        return 1
    ok = _bool_answer(resp.body)
    if args.cas:
        if not ok:
            err(f"Error! Did not write to {shown(key)}: CAS failed")
            return 1
        out(f"Success! Data written to: {shown(key)}")
    elif args.acquire:
        if not ok:
            err("Error! Did not acquire lock")
            return 1
        out(f"Success! Lock acquired on: {shown(key)}")
    elif args.release:
        if not ok:
            err("Error! Did not release lock")
            return 1
        out(f"Success! Lock released on: {shown(key)}")
    else:
        out(f"Success! Data written to: {shown(key)}")
    return 0


def delete(argv: list[str]) -> int:
    p = _parser("delete", "cairn kv delete [options] KEY_OR_PREFIX",
                "Removes KEY, or with -recurse every key under the prefix. Deleting a key that\n"
                "does not exist succeeds.")
    g = p.add_argument_group("Command Options")
    g.add_argument("-recurse", "--recurse", dest="recurse", action="store_true",
                   help="Delete every key under the prefix (an empty prefix deletes everything).")
    g.add_argument("-cas", "--cas", dest="cas", action="store_true",
                   help="Delete only if the key's modify index is -modify-index.")
    g.add_argument("-modify-index", "--modify-index", dest="modify_index", type=int, default=0,
                   metavar="<uint>", help="The modify index -cas compares with.")
    args = p.parse(argv)
    if len(args.args) > 1:
        raise UsageError(f"Too many arguments (expected 1, got {len(args.args)})")
    key = args.args[0] if args.args else ""
    if not key and not args.recurse:
        raise UsageError(MISSING_KEY)
    if args.cas and args.recurse:
        raise UsageError("Cannot specify both -cas and -recurse!")
    if args.cas and args.modify_index <= 0:
        raise UsageError("Must specify -modify-index with -cas!")
    params: list[tuple[str, str]] = []
    if args.recurse:
        params.append(("recurse", ""))
    if args.cas:
        params.append(("cas", str(args.modify_index)))
    client = client_from_args(args)
    try:
        resp = client.delete(_kv_path(key), params, server=True)
    except ApiError as exc:
        err(f"Error! Failed deleting data: {exc}")
        return 1
    if args.cas and not _bool_answer(resp.body):
        err(f"Error! Did not delete key {shown(key)}: CAS failed")
        return 1
    if args.recurse:
        out(f"Success! Deleted keys with prefix: {shown(key)}")
    else:
        out(f"Success! Deleted key: {shown(key)}")
    return 0


def export(argv: list[str]) -> int:
    p = _parser("export", "cairn kv export [options] [PREFIX]",
                "Prints every key under PREFIX as a JSON array that 'cairn kv import' reads back.")
    args = p.parse(argv)
    if len(args.args) > 1:
        raise UsageError(f"Too many arguments (expected 1, got {len(args.args)})")
    prefix = (args.args[0] if args.args else "").lstrip("/")
    client = client_from_args(args)
    resp = client.get(_kv_path(prefix), [("recurse", "")], server=True, allow_404=True)
    entries = (resp.json() or []) if resp.status != 404 else []
    out(format_export(entries))
    return 0


def _import_all(client: HTTPClient, items: list[tuple[str, int, bytes]], prefix: str) -> int:
    for key, flags, value in items:
        full = prefix + key
        params = [("flags", str(flags))] if flags else []
        try:
            client.put(_kv_path(full), params, value, server=True)
        except ApiError as exc:
            err(f"Error! Failed writing data for key {shown(full)}: {exc}")
            return 1
        out(f"Imported: {shown(full)}")
    return 0


def import_(argv: list[str]) -> int:
    p = _parser("import", "cairn kv import [options] [DATA]",
                "Writes the keys of an exported JSON array. DATA is the JSON itself, @file to read\n"
                "a file, or - (or nothing) to read stdin.")
    g = p.add_argument_group("Command Options")
    g.add_argument("-prefix", "--prefix", dest="prefix", default="", metavar="<prefix>",
                   help="Put every imported key under this prefix.")
    args = p.parse(argv)
    if len(args.args) > 1:
        raise UsageError(f"Too many arguments (expected 1, got {len(args.args)})")
    data = read_data_arg(args.args[0] if args.args else None, stdin_when_missing=True)
    items = parse_import(data)
    client = client_from_args(args)
    return _import_all(client, items, args.prefix)


SUBCOMMANDS = {"get": get, "put": put, "delete": delete, "export": export, "import": import_}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("kv", argv, HELP, SUBCOMMANDS)
