"""Alias checks: mirror the health of another service instance, driven by catalog changes.

How it works
------------
An alias check has no interval. It reads the catalog (the agent's state store) for the node
`alias_node` (default: this agent's node): the node's own checks plus the checks of the service
instance whose ID is `alias_service`, and aggregates them with `rules.alias_result` (any
critical, else any warning, else passing; an unknown instance is critical). It then parks on the
store's watch keys for that node and service (`node:<node>`, `svc:<name>`) through the agent's
WatchHub and recomputes when a log entry touches them, reporting only when the result changes.
The check never counts itself. A long wait timeout re-reads the catalog now and then anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.checks.rules import alias_result
from appliance.local.definitions import CheckDefinition
from appliance.state import watchkeys

if TYPE_CHECKING:
    from appliance.state.store import Store
    from appliance.watch import WatchHub

REFRESH_S = 300.0  # re-read even without a wake-up, in case a watch key was missed


def evaluate(store: Store, check: CheckDefinition, local_node: str) -> tuple[tuple[str, str], tuple[str, ...]]:
    """((status, output), watch keys) for one alias check against the store's current state."""
    node = check.alias_node or local_node
    services = store.node_services(node)
    target = next((s for s in services if s["ID"] == check.alias_service), None)
    own_id = check.id if node.lower() == local_node.lower() else ""
    result = alias_result(store.node_checks(node), node, check.alias_service,
                          service_exists=target is not None, exclude_check_id=own_id)
    keys: tuple[str, ...] = (watchkeys.node(node),)
    if target is not None:
        keys += (watchkeys.service(target["Service"]),)
    return result, keys


async def run_alias(store: Store, hub: WatchHub, local_node: str, check: CheckDefinition,
                    report: Callable[[str, str], None]) -> None:
    """Run until cancelled: report (status, output) now and whenever the aliased health changes."""
    last: tuple[str, str] | None = None
    while True:
        result, keys = evaluate(store, check, local_node)
        if result != last:
            last = result
            report(*result)
        await hub.wait(keys=keys, timeout=REFRESH_S)
