"""``cairn snapshot save|restore|inspect``: backups of the whole state (Consul's snapshot verbs).

* ``save FILE``: GET /v1/snapshot, verifies the archive (appliance/raft/archive.py), writes it to
  ``FILE.tmp`` then renames it to FILE, and prints ``Saved and verified snapshot to index N``.
* ``restore FILE``: verifies FILE locally, then PUT /v1/snapshot; prints ``Restored snapshot``.
* ``inspect FILE``: verifies FILE and prints Consul's table ``ID  Size  Index  Term  Version``.

A file that fails verification is an error with the reason, and nothing is sent to the agent.
"""

from __future__ import annotations

import os

from appliance.cli.flags import CliError, CliParser, UsageError, command, expect_args, out, run_subcommand
from appliance.cli.format import columnize
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args
from appliance.raft.archive import ArchiveError, read_archive

# The agent refuses archives whose state does not fit one server RPC frame; reading more is pointless.
MAX_STATE_BYTES = 64 << 20
SNAPSHOT_TIMEOUT_S = 300.0

HELP = """\
Usage: cairn snapshot <subcommand> [options] [args]

  Saves, restores and inspects snapshots of the servers' state: the catalog, KV store and
  autopilot settings, as of one Raft index. Use them for backups and disaster recovery.

      Create a snapshot:        $ cairn snapshot save backup.snap
      Restore a snapshot:       $ cairn snapshot restore backup.snap
      Inspect a snapshot:       $ cairn snapshot inspect backup.snap

Subcommands:
    inspect    Displays information about a Cairn snapshot file
    restore    Restores snapshot of Cairn server state
    save       Saves snapshot of Cairn server state
"""


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_STATE_BYTES + (2 << 20))
    except OSError as exc:
        raise CliError(f"Error opening snapshot file: {exc.strerror or exc}") from None


def _verify(data: bytes, what: str) -> tuple:
    try:
        return read_archive(data, max_state_bytes=MAX_STATE_BYTES)
    except ArchiveError as exc:
        raise CliError(f"{what}: {exc}") from None


def save(argv: list[str]) -> int:
    p = CliParser("cairn snapshot save", "cairn snapshot save [options] FILE",
                  "Retrieves an atomic, point-in-time snapshot of the servers' state and saves it to\n"
                  "FILE. Without -stale the agent answers once it has applied the leader's commit index.")
    add_http_flags(p)
    args = p.parse(argv)
    expect_args(args.args, 1, 1)
    path = args.args[0]
    client = client_from_args(args)
    try:
        resp = client.get("/v1/snapshot", server=True, timeout=SNAPSHOT_TIMEOUT_S)
    except ApiError as exc:
        raise CliError(f"Error saving snapshot: {exc}") from None
    meta, _ = _verify(resp.body, "Error verifying snapshot")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(resp.body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(f"Error writing snapshot file: {exc.strerror or exc}") from None
    out(f"Saved and verified snapshot to index {meta.index}")
    return 0


def restore(argv: list[str]) -> int:
    p = CliParser("cairn snapshot restore", "cairn snapshot restore [options] FILE",
                  "Restores the state in FILE on the servers, atomically through the Raft log: every\n"
                  "server replaces its catalog, KV and autopilot settings by the snapshot's.")
    add_http_flags(p, server=False)
    args = p.parse(argv)
    expect_args(args.args, 1, 1)
    data = _read_file(args.args[0])
    _verify(data, "Error verifying snapshot file")
    try:
        client_from_args(args).put("/v1/snapshot", None, data, timeout=SNAPSHOT_TIMEOUT_S)
    except ApiError as exc:
        raise CliError(f"Error restoring snapshot: {exc}") from None
    out("Restored snapshot")
    return 0


def format_inspect(meta) -> str:
    rows = [["ID", meta.id], ["Size", str(meta.size)], ["Index", str(meta.index)], ["Term", str(meta.term)],
            ["Version", str(meta.version)]]
    return "\n".join(" " + line for line in columnize(rows).splitlines())


def inspect(argv: list[str]) -> int:
    p = CliParser("cairn snapshot inspect", "cairn snapshot inspect [options] FILE",
                  "Verifies a snapshot file and displays its metadata (no agent needed).")
    args = p.parse(argv)
    if not args.args:
        raise UsageError("Missing FILE argument")
    expect_args(args.args, 1, 1)
    meta, _ = _verify(_read_file(args.args[0]), "Error verifying snapshot")
    out(format_inspect(meta))
    return 0


@command
def run(argv: list[str]) -> int:
    return run_subcommand("snapshot", argv, HELP, {"save": save, "restore": restore, "inspect": inspect})
