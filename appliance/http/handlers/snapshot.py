"""/v1/snapshot (reference/consul-api.md §4.11): save and restore the whole state.

* `GET /v1/snapshot[?stale]`: a gzip'd tar archive (appliance/raft/archive.py) of the state store
  as of this server's applied index, with that index in `X-Consul-Index`. Without `?stale` the
  read waits until this server has applied the leader's commit index, like any default read.
* `PUT /v1/snapshot`: restore an archive. It is verified completely first (gzip and tar framing,
  SHA256SUMS, metadata, and that state.bin decodes, with text outside UTF-8 only in KV keys, which
  are byte strings): a bad archive is a 400 with the reason and changes nothing. The state then
  goes through the Raft log as one `restore` command, so every server replaces its store at the
  same index and every blocking query wakes. The state must fit in one server RPC message (512
  MiB, in parts) and one log record, so a larger archive is refused with a 413.
"""

from __future__ import annotations

import time

from appliance.http.context import HTTPContext
from appliance.http.encoding import MAX_RESTORE_BYTES
from appliance.http.errors import HTTPError
from appliance.http.handlers.operator import leader_call
from appliance.http.query import query_options, read_point
from appliance.http.values import Answer, Request
from appliance.raft.archive import ArchiveError, build_archive, read_archive
from appliance.raft.driver import RaftDriver
from appliance.state.snapshot import SnapshotError, foreign_text, restore, snapshot


def _server(ctx: HTTPContext) -> RaftDriver:
    if not ctx.config.server or ctx.raft is None:
        raise HTTPError(500, "snapshots are taken and restored by servers: send the request to a server agent")
    return ctx.raft


async def save(req: Request, ctx: HTTPContext) -> Answer:
    consensus = _server(ctx)
    await read_point(consensus, query_options(req))
    core = consensus.core
    assert core is not None  # opened before the HTTP server starts
    index = consensus.applied_index  # the store below is exactly this index: no await in between
    state = snapshot(ctx.store)
    term = core.log.term(index) or core.log.last_term()
    conf_index, conf = core.log.config_at(index) if index else core.log.latest_config()
    configuration = {"Servers": [{"ID": s.id, "Address": s.address, "Suffrage": s.suffrage} for s in conf.servers],
                     "Index": conf_index}
    archive = build_archive(state, index=index, term=term, configuration=configuration,
                            now_ms=int(time.time() * 1000))
    headers = {"X-Consul-Index": str(max(index, 1)), "X-Consul-KnownLeader": str(consensus.known_leader).lower(),
               "X-Consul-LastContact": str(consensus.last_contact_ms)}
    return Answer(200, headers, archive, "application/x-gzip")


def _read_limited(req: Request, limit: int) -> bytes:
    too_large = f"snapshot archive too large: at most {limit} bytes can be restored (one server RPC message)"
    length = req.content_length
    if (length is not None and length > limit) or len(req.body) > limit:
        raise HTTPError(413, too_large)
    return req.body


async def restore_archive(req: Request, ctx: HTTPContext) -> Answer:
    _server(ctx)
    data = _read_limited(req, MAX_RESTORE_BYTES)
    if not data:
        raise HTTPError(400, "snapshot archive is empty: send the archive as the request body")
    try:
        _, state = read_archive(data, max_state_bytes=MAX_RESTORE_BYTES)
    except ArchiveError as err:
        raise HTTPError(400 if "too large" not in str(err) else 413, str(err)) from None
    try:
        where = foreign_text(restore(state))  # decodes: the FSM will not refuse it on any server
    except (SnapshotError, KeyError, TypeError, ValueError) as err:
        raise HTTPError(400, f"snapshot archive state.bin cannot be read: {err}") from None
    if where is not None:  # only KV keys may be bytes outside UTF-8 (state/snapshot.py)
        raise HTTPError(400, f"snapshot archive state.bin cannot be read: text that is not UTF-8 in {where}")
    await leader_call(ctx, {"Type": "restore", "State": state})
    return Answer()
