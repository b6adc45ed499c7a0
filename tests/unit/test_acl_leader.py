"""The ACL leader duties: built-ins and the initial management token, expired tokens reaped."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.acl.builtin import GLOBAL_MANAGEMENT_ID
from appliance.acl_leader import AclLeader
from appliance.state.fsm import FSM
from appliance.state.store import Store


class FakeRaft:
    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm
        self.index = 0
        self.is_leader = True

    async def propose(self, cmd: dict[str, Any]) -> Any:
        self.index += 1
        return self.fsm.apply(self.index, cmd).result


def test_init_and_reaping() -> None:
    store = Store()
    raft = FakeRaft(FSM(store))
    now = [1_000_000.0]
    leader = AclLeader(raft, store, "root", clock=lambda: now[0])

    async def go() -> None:
        await leader.tick()
        tok = store.acl.token_by_secret("root")
        assert tok is not None and tok["Policies"] == [{"ID": GLOBAL_MANAGEMENT_ID}]
        assert tok["Description"] == "Initial Management Token" and store.acl.bootstrap
        await raft.propose({"Type": "acl", "Op": "token_set", "Create": True, "Object": {
            "AccessorID": "a1", "SecretID": "s1", "Description": "", "Local": False,
            "CreateTime": "1970-01-12T13:46:40Z", "ExpirationTime": "1970-01-12T13:47:40Z"}})
        await leader.tick()
        assert "a1" in store.acl.tokens
        now[0] += 120
        await leader.tick()
        assert "a1" not in store.acl.tokens and "root" in store.acl.secrets
        raft.is_leader = False
        before = raft.index
        await leader.tick()
        assert raft.index == before

    asyncio.run(go())
