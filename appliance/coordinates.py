"""Network coordinates on the agent: send ours to the catalog, batch updates, answer `?near`.

How it works
------------
Every agent sends its LAN coordinate (its gossip member's Vivaldi coordinate, `appliance/gossip/
coordinate.py`; the origin while it has no gossip pool) to the catalog as Consul's agents do: every
`max(sync_coordinate_interval_min, members / sync_coordinate_rate_target)` seconds (15 s, or one
update per 64 members per second in large pools) plus a random stagger of up to one interval.

Updates (ours, and `PUT /v1/coordinate/update`) go to a `CoordinateBatcher`, Consul's
Coordinate.Update endpoint: it refuses non-finite coordinates ("invalid coordinate") and ones of
another dimensionality ("incompatible coordinate"), keeps only the latest update per
node:segment, and every `COORDINATE_UPDATE_PERIOD_S` (5 s) proposes the pending ones as
`coordinate_batch_update` log entries of at most 128 updates, at most 5 entries (640 updates) per
period; the excess is discarded with a warning. The FSM stores them in the catalog's coordinate
table (dropping updates for nodes not in the catalog), so they replicate, survive snapshots and
wake blocking `/v1/coordinate/nodes` queries.

`?near=<node>` and `?near=_agent` sort catalog and health answers by estimated round-trip time
from that node's stored coordinate (`near_source` + `sort_near`); a node without a coordinate
sorts last, an unknown source leaves the order unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from appliance.acl.caller import acting_as, caller_token
from appliance.acl.commands import PermissionDenied
from appliance.gossip.coordinate import Coordinate, CoordinateError, sort_by_distance
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.state.store import Store

log = logging.getLogger("agent.coordinate")

SYNC_COORDINATE_RATE_TARGET = 64.0  # Consul's sync_coordinate_rate_target (updates per second, cluster-wide)
SYNC_COORDINATE_INTERVAL_MIN_S = 15.0  # Consul's sync_coordinate_interval_min
COORDINATE_UPDATE_PERIOD_S = 5.0  # Consul's CoordinateUpdatePeriod
COORDINATE_UPDATE_BATCH_SIZE = 128  # Consul's CoordinateUpdateBatchSize
COORDINATE_UPDATE_MAX_BATCHES = 5  # Consul's CoordinateUpdateMaxBatches


def send_interval_s(members: int, rate: float = SYNC_COORDINATE_RATE_TARGET,
                    minimum_s: float = SYNC_COORDINATE_INTERVAL_MIN_S) -> float:
    """Consul's lib.RateScaledInterval: members / rate seconds, at least `minimum_s`."""
    return max(minimum_s, members / rate)


class CoordinateUpdateError(ValueError):
    """An update Consul's Coordinate.Update refuses (its text)."""


def validate_update(body: Any, dimensionality: int = 8) -> dict[str, Any]:
    """A decoded /v1/coordinate/update body (appliance.api.structs.COORDINATE_UPDATE) as a stored
    update. An unknown (or empty) node is dropped when the batch applies."""
    node = body.get("Node", "")
    segment = body.get("Segment", "")
    raw = body.get("Coord")
    if raw is None:
        raise CoordinateUpdateError("invalid coordinate")
    try:
        coord = Coordinate.from_json(raw)
    except CoordinateError:
        raise CoordinateUpdateError("invalid coordinate") from None
    if len(coord.vec) != dimensionality:
        raise CoordinateUpdateError("incompatible coordinate")
    return {"Node": node, "Segment": segment, "Coord": coord.to_json()}


class CoordinateBatcher:
    """Pending coordinate updates, flushed to the log in batches (Consul's Coordinate endpoint)."""

    def __init__(self, propose: Callable[[dict[str, Any]], Any]) -> None:
        self.propose = propose  # async (command) -> result
        self.pending: dict[str, tuple[dict[str, Any], str]] = {}  # node:segment -> (update, token)
        self.discarded = 0
        self.applied = 0

    def submit(self, update: dict[str, Any], token: str | None = None) -> None:
        """Queue an update; it is written with `token` (default: the current caller's,
        appliance/acl/caller.py), which a client agent forwards for the server to authorize."""
        self.pending[f"{update['Node']}:{update['Segment']}"] = (update, caller_token() if token is None else token)

    async def flush(self) -> int:
        """Propose what is pending, in batches of one token each; returns how many updates were
        proposed. A batch the servers' ACLs refuse is dropped (`Coordinate update blocked by ACLs`)."""
        pending, self.pending = self.pending, {}
        limit = COORDINATE_UPDATE_BATCH_SIZE * COORDINATE_UPDATE_MAX_BATCHES
        updates = list(pending.values())
        if len(updates) > limit:
            self.discarded += len(updates) - limit
            log.warning("Discarded %d coordinate updates", len(updates) - limit)
            updates = updates[:limit]
        by_token: dict[str, list[dict[str, Any]]] = {}
        for update, token in updates:
            by_token.setdefault(token, []).append(update)
        for token, group in by_token.items():
            for start in range(0, len(group), COORDINATE_UPDATE_BATCH_SIZE):
                batch = group[start:start + COORDINATE_UPDATE_BATCH_SIZE]
                try:
                    with acting_as(token):
                        await self.propose({"Type": "coordinate_batch_update", "Updates": batch})
                except PermissionDenied as err:
                    log.warning("Coordinate update blocked by ACLs: error=%r", str(err))
                    continue
                self.applied += len(batch)
        return len(updates)

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Flush the batched coordinate updates every period until cancelled."""
        task_status.started()
        while True:
            await asyncio.sleep(COORDINATE_UPDATE_PERIOD_S)
            try:
                await self.flush()
            except Exception as err:  # noqa: BLE001 - no leader right now: the next period retries
                log.warning("Batch update failed: %s", err)


async def send_coordinates(node: Callable[[], str], coordinate: Callable[[], Coordinate],
                           members: Callable[[], int], batcher: CoordinateBatcher, rng: random.Random,
                           interval_min_s: float = SYNC_COORDINATE_INTERVAL_MIN_S,
                           token: Callable[[], str] = lambda: "") -> None:
    """Consul's sendCoordinate loop: our LAN coordinate to the catalog, rate-scaled and staggered,
    written with the agent token (`token`). The first one goes within a second of start, so a new
    agent (a -dev server) is in /v1/coordinate/nodes with the next batch rather than 15-30 s later."""
    wait = rng.uniform(0, min(1.0, interval_min_s))
    while True:
        await asyncio.sleep(wait)
        batcher.submit({"Node": node(), "Segment": "", "Coord": coordinate().to_json()}, token())
        interval = send_interval_s(members(), minimum_s=interval_min_s)
        wait = interval + rng.uniform(0, interval)


# ---------------------------------------------------------------------------------- ?near


def near_source(store: Store, near: str, agent_node: str) -> Coordinate | None:
    """The coordinate `?near=` names (`_agent` = the queried agent's node); None: do not sort."""
    if not near:
        return None
    name = agent_node if near == "_agent" else near
    rec = store.coordinate(name)
    if rec is None:
        return None
    try:
        return Coordinate.from_json(rec["Coord"])
    except CoordinateError:
        return None


def node_coordinate(store: Store, name: str) -> Coordinate | None:
    rec = store.coordinate(name)
    if rec is None:
        return None
    try:
        return Coordinate.from_json(rec["Coord"])
    except CoordinateError:
        return None


def sort_near(store: Store, items: list[Any], near: str, agent_node: str,
              node_of: Callable[[Any], str]) -> list[Any]:
    """Stable sort by estimated RTT from the `?near` source; unchanged if it has no coordinate."""
    source = near_source(store, near, agent_node)
    if source is None:
        return items
    cache: dict[str, Coordinate | None] = {}

    def coordinate_of(item: Any) -> Coordinate | None:
        name = node_of(item)
        if name not in cache:
            cache[name] = node_coordinate(store, name)
        return cache[name]

    return sort_by_distance(items, source, coordinate_of)

