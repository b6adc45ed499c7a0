"""This agent's own services and checks, with what keeps them: the check runners, anti-entropy and
persistence.

`LocalAgent` owns the `LocalState` (appliance/local/state.py), the `CheckManager` that runs its
checks (appliance/checks/manager.py), the `StateSyncer` that copies it into the catalog
(appliance/local/sync.py) and, on an agent with a data_dir, the file that keeps API registrations
across restarts (appliance/local/persist.py). After any change of local state, `changed()` saves
the file, wakes readers blocked on `/v1/agent/service/<id>?hash=` (watch key `local`), asks
anti-entropy for a sync and lets the check manager start or stop runners. Definitions from
config files are replaced as one set at start and on reload (`load_config_definitions`).

The composition root (appliance/agent.py) starts `checks.serve` and `syncer.serve` in its task
tree; this class only builds and connects them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.checks.manager import CheckManager, refuse_config_checks
from appliance.local import persist
from appliance.local.definitions import parse_check_definition, parse_service_definition
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig
    from appliance.interfaces import Consensus
    from appliance.state.store import Store
    from appliance.watch import WatchHub

log = logging.getLogger("agent")


class LocalAgent:
    def __init__(self, config: Callable[[], RuntimeConfig], *, store: Store, hub: WatchHub,
                 consensus: Consensus, node_info: Callable[[], dict[str, Any]],
                 cluster_size: Callable[[], int], rng: random.Random) -> None:
        cfg = config()
        self.config = config
        self.hub = hub
        self.state = LocalState(cfg.node_name, cfg.datacenter, cfg.check_output_max_size,
                                sidecar_min_port=cfg.ports.sidecar_min_port,
                                sidecar_max_port=cfg.ports.sidecar_max_port)
        self.syncer = StateSyncer(store, consensus, self.state, node_info, rng=rng, cluster_size=cluster_size)
        self.checks = CheckManager(self.state, changed=self.changed, config=config, store=store, hub=hub,
                                   rng=rng)  # runs script/HTTP/TCP/UDP/alias checks
        # API registrations survive restarts when there is a data_dir (never in -dev)
        self.persist_dir = "" if cfg.dev else cfg.data_dir
        self._persisted: dict[str, Any] | None = None

    def load_config_definitions(self, cfg: RuntimeConfig) -> None:
        """The services and checks of config files, as one set (start and reload); a refusal raises
        DefinitionError before anything changed, so a bad reload keeps the old set."""
        services = [parse_service_definition(raw, from_config=True) for raw in cfg.services]
        checks = [parse_check_definition(raw, from_config=True) for raw in cfg.checks]
        refuse_config_checks(cfg, services, checks)
        self.state.sidecar_min_port = cfg.ports.sidecar_min_port
        self.state.sidecar_max_port = cfg.ports.sidecar_max_port
        self.state.replace_config_definitions(services, checks, time.monotonic())

    def restore(self) -> None:
        """Registrations made through the API before a restart (agents with a data_dir)."""
        if self.persist_dir:
            for warning in persist.restore(self.persist_dir, self.state, time.monotonic()):
                log.warning(warning)

    def changed(self) -> None:
        if self.persist_dir:
            self._persisted = persist.save(self.persist_dir, self.state, self._persisted)
        self.hub.notify(("local",))
        self.syncer.trigger()
        self.checks.reconcile()

    def full_sync_soon(self) -> None:
        """Compare everything with the catalog at the next sync, and sync soon (Consul's SyncFull
        trigger: the agent's `agent` or `default` token changed, so writes ACLs refused may pass)."""
        self.state.dirty_all = True
        self.syncer.trigger()

    def event_services(self) -> list[tuple[str, list[str]]]:
        """(name, tags) of this agent's services for user-event filters (ID too when it differs)."""
        out = []
        for sid, entry in self.state.services.items():
            d = entry.definition
            out.append((d.name, list(d.tags)))
            if sid != d.name:
                out.append((sid, list(d.tags)))
        return out
