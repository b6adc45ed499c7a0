"""The ACL system's leader duties: the built-in objects and the initial management token when
leadership is won, and expired tokens reaped.

On a server with `acl.enabled`, `AclLeader.serve` runs in the task tree. While this server leads
it makes sure the store holds the built-in policies (global-management, builtin/global-read-only),
the anonymous token and, when `acl.tokens.initial_management` is set, the token with that secret
(`Initial Management Token`, global-management; that counts as the bootstrap). Every
`interval_s` it proposes one `tokens_delete` command for the tokens whose ExpirationTime has
passed (Consul's expired-token reaping). An expired token already acts as missing before it is
reaped (appliance/acl/resolve.py); reaping keeps the table small and the lists truthful.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from appliance.acl.builtin import ANONYMOUS_ID, GLOBAL_MANAGEMENT_ID
from appliance.acl.objects import time_text
from appliance.acl.resolve import expiry
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus

log = logging.getLogger("agent.server.acl")
REAP_INTERVAL_S = 30.0


class AclLeader:
    def __init__(self, raft: Any, store: Any, initial_management: str = "", *,
                 interval_s: float = REAP_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self.raft = raft
        self.store = store
        self.initial_management = initial_management
        self.interval_s = interval_s
        self.clock = clock

    def init_command(self) -> dict[str, Any] | None:
        """The `init` command if the store lacks a built-in or the initial management token."""
        acl = self.store.acl
        missing_token = self.initial_management and acl.token_by_secret(self.initial_management) is None
        if GLOBAL_MANAGEMENT_ID in acl.policies and ANONYMOUS_ID in acl.tokens and not missing_token:
            return None
        cmd: dict[str, Any] = {"Type": "acl", "Op": "init"}
        if missing_token:
            cmd["Object"] = {"AccessorID": str(uuid.uuid4()), "SecretID": self.initial_management,
                             "Description": "Initial Management Token", "Local": False,
                             "Policies": [{"ID": GLOBAL_MANAGEMENT_ID}], "CreateTime": time_text(self.clock())}
        return cmd

    def expired(self) -> list[str]:
        now = self.clock()
        out = []
        for accessor, tok in self.store.acl.tokens.items():
            at = expiry(tok)
            if at is not None and at <= now:
                out.append(accessor)
        return sorted(out)

    async def tick(self) -> None:
        if not self.raft.is_leader:
            return
        cmd = self.init_command()
        if cmd is not None:
            await self.raft.propose(cmd)
            log.info("ACL built-ins and initial management token in place")
        expired = self.expired()
        if expired:
            await self.raft.propose({"Type": "acl", "Op": "tokens_delete", "IDs": expired})
            log.info("reaped expired ACL tokens: count=%d", len(expired))

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - lost leadership or no quorum: the next tick retries
                log.debug("ACL leader duties deferred: %s", err)
            await asyncio.sleep(self.interval_s if self.store.acl.policies else 1.0)
