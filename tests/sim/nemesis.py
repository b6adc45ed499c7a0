"""The nemesis: faults chosen by the seed during the chaos phase, all undone at the heal.

Every `step_ms` it rolls, at the run's rates: crash a random running server (it restarts after
20 ms to 1 s, losing its unsynced writes, maybe with a torn tail); start a partition if none is
active (isolate a server, isolate the leader, split off a random minority, cut one link, or cut
one direction only: an asymmetric partition), healed after 50 ms to 1.5 s; ask the leader to
transfer leadership (to a random voter or the most up-to-date one); or propose a membership
change through the leader (add a spare server as a non-voter, promote a non-voter, demote or
remove a voter while more than three remain; the leader itself may be removed).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from appliance.raft.messages import ConfChange, ConfChangeType

if TYPE_CHECKING:
    from .world import Sim


class Nemesis:
    step_ms = 50.0

    def __init__(self, sim: Sim, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.stop_at = 0.0
        self.partition_token = 0
        self.partition_active = False
        self.crashes = self.partitions = self.transfers = self.conf_changes = 0

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.sim.schedule(self.step_ms, self._step)

    def _roll(self, per_s: float) -> bool:
        return per_s > 0 and self.rng.random() < per_s * self.step_ms / 1000

    def _step(self) -> None:
        sim, o = self.sim, self.sim.opts
        if sim.now >= self.stop_at:
            return
        if self._roll(o.crash_per_s):
            self.crash()
        if not self.partition_active and self._roll(o.partition_per_s):
            self.partition()
        if self._roll(o.transfer_per_s):
            self.transfer()
        if self._roll(o.membership_per_s):
            self.membership()
        sim.schedule(self.step_ms, self._step)

    def crash(self) -> None:
        alive = [n for n in self.sim.ids if self.sim.nodes[n].alive]
        if not alive:
            return
        nid = self.rng.choice(alive)
        self.sim.nodes[nid].crash()
        self.crashes += 1
        self.sim.schedule(self.rng.uniform(20, 1000), self._restart, nid)

    def _restart(self, nid: str) -> None:
        node = self.sim.nodes[nid]
        if not node.alive:
            node.start()

    def partition(self) -> None:
        sim, rng, net = self.sim, self.rng, self.sim.net
        ids = sim.ids
        kind = rng.choice(["isolate", "isolate-leader", "minority", "link", "one-way"])
        lead = sim.leader()
        if kind == "isolate-leader" and lead is not None:
            net.split([lead.id], ids)
        elif kind == "minority":
            net.split(rng.sample(ids, rng.randint(1, (len(ids) - 1) // 2)), ids)
        elif kind == "link":
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
        elif kind == "one-way":
            victim = rng.choice(ids)
            for other in ids:
                if other != victim:
                    if rng.random() < 0.5:
                        net.cut(victim, other, both=False)
                    else:
                        net.cut(other, victim, both=False)
        else:
            net.split([rng.choice(ids)], ids)
        self.partitions += 1
        self.partition_active = True
        self.partition_token += 1
        sim.schedule(rng.uniform(50, 1500), self._heal_partition, self.partition_token)

    def _heal_partition(self, token: int) -> None:
        if token == self.partition_token:
            self.sim.net.heal()
            self.partition_active = False

    def transfer(self) -> None:
        lead = self.sim.leader()
        if lead is None:
            return
        voters = [v for v in lead.core.voters() if v != lead.id]
        target = self.rng.choice(voters + [None]) if voters else None
        self.transfers += 1
        lead.call(lambda core: core.transfer_leadership(target))

    def membership(self) -> None:
        lead = self.sim.leader()
        if lead is None:
            return
        conf = lead.core.configuration
        choices: list[ConfChange] = []
        for nid in self.sim.ids:
            server = conf.server(nid)
            if server is None:
                choices.append(ConfChange(ConfChangeType.ADD_NONVOTER, nid))
            elif not server.voter:
                choices.append(ConfChange(ConfChangeType.ADD_VOTER, nid))
                choices.append(ConfChange(ConfChangeType.REMOVE_SERVER, nid))
            elif len(conf.voters) > 3:
                choices.append(ConfChange(ConfChangeType.REMOVE_SERVER, nid))
                choices.append(ConfChange(ConfChangeType.DEMOTE_VOTER, nid))
        if not choices:
            return
        change = self.rng.choice(choices)
        self.conf_changes += 1
        lead.call(lambda core: core.propose_conf_change(change))

    def heal_all(self) -> None:
        """End of chaos: heal the network, stop loss and duplication, restart every server."""
        sim = self.sim
        self.partition_token += 1
        self.partition_active = False
        sim.net.heal()
        sim.net.loss = 0.0
        sim.net.duplicate = 0.0
        for nid in sim.ids:
            if not sim.nodes[nid].alive:
                sim.nodes[nid].start()
