"""ACL replication: a secondary datacenter's leader copies the primary's policies, roles and global
tokens into its own Raft log.

How it works
------------
In a datacenter other than `primary_datacenter`, with ACLs on, the leader runs `AclReplicator`
(Consul's ACL replication routines). Every `interval_s` (1 s, Consul's default replication rate)
it asks a server of the primary datacenter, over the WAN federation (appliance/federation/
forward.py), with the agent's `replication` token:

    GET /v1/acl/policies     stubs; each policy whose Hash differs here is read whole
    GET /v1/acl/roles        whole roles
    GET /v1/acl/tokens       stubs (with `acl.enable_token_replication`); each global token whose
                             Hash differs here is read whole (the replication token needs
                             acl:write to see secrets, as in Consul)

and proposes, on its own log, what makes this datacenter's tables equal the primary's: deletions
first (so a name freed in the primary can be taken again here), then policies, roles and tokens in
that order (links resolve). Each object keeps the primary's IDs, secrets and Hash; the indexes are
this datacenter's. Built-in objects (global-management, builtin/global-read-only, the anonymous
token) are each datacenter's own. Local tokens (`Local: true`) are never touched: they are this
datacenter's. A round is skipped when the primary's ACL index (`X-Consul-Index` of the lists) has
not moved since the last good round.

`status()` is `/v1/acl/replication` (Consul's shape): Enabled (a secondary with ACLs), Running
(this server leads and replicates), SourceDatacenter, ReplicationType (`policies`, or `tokens`
with token replication), ReplicatedIndex, ReplicatedRoleIndex, ReplicatedTokenIndex (the
primary's indexes last copied), LastSuccess, LastError, LastErrorMessage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from appliance.acl.builtin import ANONYMOUS_ID, BUILTIN_POLICIES
from appliance.acl.objects import time_text
from appliance.federation.forward import Answer, Exchange
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus

log = logging.getLogger("agent.server.replication.acl")
Record = dict[str, Any]
Request = Callable[[str, Exchange], Awaitable[Answer]]
INTERVAL_S = 1.0
ZERO_TIME = "0001-01-01T00:00:00Z"
HIDDEN = "<hidden>"
_INDEXES = ("CreateIndex", "ModifyIndex")


class ReplicationError(Exception):
    """The primary could not be asked, or refused (its text)."""


def _plain(rec: Record) -> Record:
    """A record read from the primary as this datacenter stores it: no indexes, links by ID."""
    out = {k: v for k, v in rec.items() if k not in _INDEXES}
    for field in ("Policies", "Roles"):
        if out.get(field):
            out[field] = [{"ID": link["ID"]} for link in out[field]]
    return out


class AclReplicator:
    """A secondary datacenter's copy of the primary's ACL objects (see the module docstring)."""

    def __init__(self, *, datacenter: str, primary: str, tokens: bool, raft: Any, store: Any, request: Request,
                 replication_token: Callable[[], str], interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.datacenter = datacenter
        self.primary = primary
        self.tokens = tokens
        self.raft = raft
        self.store = store
        self.request = request
        self.replication_token = replication_token
        self.interval_s = interval_s
        self.clock = clock
        self.running = False
        self.indexes = {"policies": 0, "roles": 0, "tokens": 0}
        self.seen_index = 0  # the primary's ACL index when the last round copied everything
        self.last_success = ZERO_TIME
        self.last_error = ZERO_TIME
        self.last_error_message = ""
        self.rounds = 0

    @property
    def enabled(self) -> bool:
        return self.datacenter != self.primary

    def status(self) -> Record:
        return {"Enabled": self.enabled, "Running": self.running,
                "SourceDatacenter": self.primary if self.enabled else "",
                "ReplicationType": ("tokens" if self.tokens else "policies") if self.running else "",
                "ReplicatedIndex": self.indexes["policies"], "ReplicatedRoleIndex": self.indexes["roles"],
                "ReplicatedTokenIndex": self.indexes["tokens"], "LastSuccess": self.last_success,
                "LastError": self.last_error, "LastErrorMessage": self.last_error_message}

    # ------------------------------------------------------------------ asking the primary

    async def _get(self, path: str) -> tuple[Any, int]:
        token = self.replication_token()
        headers = [("X-Consul-Token", token)] if token else []
        answer = await self.request(self.primary, Exchange("GET", path, [], headers))
        if answer.status != 200:
            raise ReplicationError(answer.body.decode("utf-8", "replace").strip() or f"status {answer.status}")
        index = next((int(v) for k, v in answer.headers if k.lower() == "x-consul-index" and v.isdigit()), 0)
        return json.loads(answer.body), index

    # ------------------------------------------------------------------ one round

    async def round(self) -> bool:
        """Copy what changed in the primary; False when nothing had to be read."""
        policies, index = await self._get("/v1/acl/policies")
        if index and index == self.seen_index:
            return False
        roles, role_index = await self._get("/v1/acl/roles")
        tokens: list[Record] = []
        token_index = 0
        if self.tokens:
            stubs, token_index = await self._get("/v1/acl/tokens")
            tokens = [t for t in stubs if not t.get("Local") and t["AccessorID"] != ANONYMOUS_ID]
        await self._apply(policies, roles, tokens)
        self.indexes.update(policies=index, roles=role_index or index, tokens=token_index)
        self.seen_index = min(index, role_index, token_index or index)  # 0 (no index): never skipped
        return True

    async def _apply(self, policies: list[Record], roles: list[Record], tokens: list[Record]) -> None:
        t = self.store.acl
        builtin = {pid for pid, *_ in BUILTIN_POLICIES}
        remote_policies = {p["ID"]: p for p in policies if p["ID"] not in builtin}
        remote_roles = {r["ID"]: r for r in roles}
        remote_tokens = {tok["AccessorID"]: tok for tok in tokens}
        if self.tokens:
            for accessor, tok in list(t.tokens.items()):
                if not tok.get("Local") and accessor != ANONYMOUS_ID and accessor not in remote_tokens:
                    await self._propose({"Op": "token_delete", "ID": accessor})
        for rid in [rid for rid in t.roles if rid not in remote_roles]:
            await self._propose({"Op": "role_delete", "ID": rid})
        for pid in [pid for pid in t.policies if pid not in builtin and pid not in remote_policies]:
            await self._propose({"Op": "policy_delete", "ID": pid})
        for pid, stub in remote_policies.items():
            have = t.policies.get(pid)
            if have is None or have.get("Hash") != stub.get("Hash") or have.get("Name") != stub.get("Name"):
                full, _ = await self._get(f"/v1/acl/policy/{quote(pid)}")
                await self._propose({"Op": "policy_set", "Object": _plain(full)})
        for rid, role in remote_roles.items():
            want = _plain(role)
            have = t.roles.get(rid)
            if have is None or {k: v for k, v in have.items() if k not in _INDEXES} != want:
                await self._propose({"Op": "role_set", "Object": want})
        for accessor, stub in remote_tokens.items():
            have = t.tokens.get(accessor)
            if have is None or have.get("Hash") != stub.get("Hash"):
                full, _ = await self._get(f"/v1/acl/token/{quote(accessor)}")
                if full.get("SecretID") == HIDDEN:
                    raise ReplicationError('the replication token cannot read token secrets: it needs acl = "write"')
                await self._propose({"Op": "token_set", "Object": _plain(full), "Create": have is None})

    async def _propose(self, cmd: Record) -> None:
        await self.raft.propose({"Type": "acl", **cmd})

    # ------------------------------------------------------------------ the loop

    async def tick(self) -> None:
        if not self.raft.is_leader:
            self.running = False
            return
        if not self.running:
            log.info("started ACL replication: source_datacenter=%s type=%s", self.primary,
                     "tokens" if self.tokens else "policies")
        self.running = True
        try:
            await self.round()
        except (ReplicationError, OSError, ValueError, KeyError, TypeError) as err:
            self._failed(str(err) or type(err).__name__)
            return
        except Exception as err:  # noqa: BLE001 - the federation's ForwardError, a lost leadership
            self._failed(str(err) or type(err).__name__)
            return
        self.rounds += 1
        self.last_success = time_text(self.clock())

    def _failed(self, text: str) -> None:
        if text != self.last_error_message:
            log.warning("ACL replication error (will retry if still leader): error=%r", text)
        self.last_error = time_text(self.clock())
        self.last_error_message = text

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self.interval_s)
        finally:
            self.running = False
