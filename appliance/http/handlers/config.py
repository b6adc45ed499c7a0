"""/v1/config: config entries (reference/connect.md §3.1).

    GET    /v1/config/<kind>            the entries of a kind (blocking; [] when none)
    GET    /v1/config/<kind>/<name>     one entry (blocking); 404 Config entry not found for "k" / "n"
    PUT    /v1/config [?cas=<index>]    write an entry: true, or with cas true/false
    DELETE /v1/config/<kind>/<name> [?cas=<index>]   {} (with cas: true/false)

The body is decoded and checked by appliance/connect/entries.py (service-intentions by
intentions.py); what depends on other entries (a router or splitter needs an L7 protocol for its
service) is checked against the entries as they would be after the write, so a write or delete
that would break a discovery chain is refused and changes nothing. The `config_entry` command
applies the CAS (appliance/state/connect.py). Decoding errors are 400, validation errors 500,
as Consul's RPC errors are. `bootstrap` writes the agent's `config_entries { bootstrap }` entries
that do not exist yet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from appliance.connect import entries, intentions
from appliance.connect.chain import compile_chain
from appliance.http.context import HTTPContext
from appliance.http.encoding import read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import blocking, parse_index
from appliance.http.values import Answer, Request, json_answer
from appliance.raft.messages import RaftError
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

PREFIX = "/v1/config/"
BOOTSTRAP_ATTEMPTS = 120


def kind_name(req: Request) -> tuple[str, str]:
    kind, _, name = path_tail(req, PREFIX).partition("/")
    return kind, name


def prepare(body: Any, store: Any) -> dict[str, Any]:
    """A written entry decoded, normalized and validated (EntryError: 400 for decoding, else 500)."""
    entry = entries.normalize(entries.decode(body))
    entries.validate(entry)
    if entry["Kind"] == entries.INTENTIONS:
        entry = intentions.check_sources(entry)
    after = dict(store.connect.entries)
    after[(entry["Kind"], entry["Name"])] = entry
    entries.check_chains(after)
    if entry["Kind"] in (entries.ROUTER, entries.SPLITTER, entries.RESOLVER):
        compile_chain(after, entry["Name"], "dc1", "")  # a redirect or split loop is refused now
    return entry


def _cas(req: Request) -> int | None:
    if "cas" not in req.query:
        return None
    try:
        return parse_index(req.query["cas"])
    except HTTPError:
        raise HTTPError(400, f"Invalid value for ?cas: {req.query['cas']}") from None


async def propose(ctx: HTTPContext, cmd: dict[str, Any]) -> Any:
    try:
        return await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None


async def read(req: Request, ctx: HTTPContext) -> Answer:
    kind, name = kind_name(req)
    if not kind:
        return Answer.text(404, "Must provide either a kind or both kind and name")
    if kind not in entries.SPECS:
        raise HTTPError(500, f"invalid config entry kind: {kind}")
    tables = ctx.store.connect
    if not name:
        body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(watchkeys.config_kind(kind)),
                                       keys=(watchkeys.config_kind(kind),), render=lambda: tables.entries_of(kind))
        return json_answer(req, body, headers=headers)
    key = watchkeys.config_entry(kind, name)
    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(key), keys=(key,),
                                   render=lambda: tables.entry(kind, name))
    if body is None:
        return Answer.text(404, f'Config entry not found for "{kind}" / "{name}"', headers=headers)
    return json_answer(req, body, headers=headers)


async def apply(req: Request, ctx: HTTPContext) -> Answer:
    body = read_json(req)
    try:
        entry = prepare(body, ctx.store)
    except entries.EntryError as err:
        text = str(err)
        raise HTTPError(400 if text.startswith("Request decoding failed") else 500, text) from None
    cmd: dict[str, Any] = {"Type": "config_entry", "Op": "set", "Kind": entry["Kind"], "Name": entry["Name"],
                           "Entry": entry}
    cas = _cas(req)
    if cas is not None:
        cmd["CAS"] = cas
    return json_answer(req, bool(await propose(ctx, cmd)))


async def delete(req: Request, ctx: HTTPContext) -> Answer:
    kind, name = kind_name(req)
    if not kind or not name:
        raise HTTPError(400, "Must provide both a kind and name to delete")
    if kind not in entries.SPECS:
        raise HTTPError(500, f"invalid config entry kind: {kind}")
    after = {k: v for k, v in ctx.store.connect.entries.items() if k != (kind, name)}
    try:
        entries.check_chains(after)
    except entries.EntryError as err:
        raise HTTPError(500, str(err)) from None
    cmd: dict[str, Any] = {"Type": "config_entry", "Op": "delete", "Kind": kind, "Name": name}
    cas = _cas(req)
    if cas is None:
        await propose(ctx, cmd)
        return json_answer(req, {})
    cmd["CAS"] = cas
    return json_answer(req, bool(await propose(ctx, cmd)))


async def bootstrap(consensus: Any, store: Any, configured: tuple[dict[str, Any], ...],
                    log: logging.Logger) -> None:
    """Write the agent's bootstrap entries that do not exist yet (CAS 0: never overwrite)."""
    for raw in configured:
        try:
            entry = prepare(raw, store)
        except entries.EntryError as err:
            log.error("Failed to bootstrap config entry: error=%s", err)
            continue
        cmd = {"Type": "config_entry", "Op": "set", "Kind": entry["Kind"], "Name": entry["Name"], "Entry": entry,
               "CAS": 0}
        for attempt in range(BOOTSTRAP_ATTEMPTS):  # a new cluster may have no leader yet
            try:
                written = await consensus.propose(cmd)
                break
            except CommandError as err:
                log.error("Failed to bootstrap config entry: kind=%s name=%s error=%s", entry["Kind"],
                          entry["Name"], err)
                written = False
                break
            except RaftError:
                if attempt == BOOTSTRAP_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(1.0)
        if written:
            log.info("bootstrapped config entry: kind=%s name=%s", entry["Kind"], entry["Name"])
