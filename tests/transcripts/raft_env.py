"""The interaction environment behind the Raft transcripts (tests/transcripts/raft/*.txt).

A handful of servers, each a `RaftCore` in the shipped host (appliance/raft/host.py `RaftHost`,
as the agent's driver and the simulator run it), wired to an in-memory network that only moves
messages when a command says so, and to `MemoryStorage` (appliance/raft/durable.py), which
applies a Ready exactly as the durability order says (snapshot, entries, hard state, then the
messages that wait for them). The state machine only records what it applied. Nothing is random:
election timeouts are the low end of the range, so `tick-election` fires an election exactly.

Commands (arguments in brackets are optional):

  add-nodes N [voters=1,2,3] [prevote=true] [checkquorum=true] [election=10] [heartbeat=1]
            [lease=5] [max-append=64] [inflight=2] [trailing=10240] [threshold=16384]
                              nodes 1..N; the voters start from a bootstrapped configuration,
                              the others empty (to be added by a configuration change)
  campaign ID                 start an election now (pre-vote first when enabled)
  tick ID [COUNT]             tick a node; tick-election ID / tick-heartbeat ID tick it the
                              election / heartbeat number of times
  tick-stabilize ID COUNT     COUNT times: tick the node, then stabilize everything silently
  process-ready ID...         take a Ready, print it, persist, queue messages, apply, advance
  deliver-msgs [ID...] [drop] deliver (or drop) the messages queued for these nodes (all if none)
  stabilize [ID...]           process-ready and deliver-msgs until nothing moves
  propose ID DATA             propose a command
  propose-conf-change ID add-voter|add-nonvoter|demote|remove TARGET
  transfer-leadership ID [TARGET]
  read-index ID REQUEST
  compact ID INDEX            take a snapshot at INDEX and compact the log (keeps `trailing`)
  isolate ID / cut A B / recover   drop messages to and from ID / between A and B / heal all
  restart ID                  crash (losing nothing: every Ready is persisted at once) and
                              restart from storage
  status ID / raft-log ID / raft-state
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from appliance.raft.config import CoreConfig
from appliance.raft.core import RaftCore
from appliance.raft.durable import MemoryStorage
from appliance.raft.host import RaftHost
from appliance.raft.messages import (
    ConfChange,
    ConfChangeType,
    Configuration,
    Entry,
    EntryType,
    Message,
    MsgType,
    RaftError,
    Snapshot,
    bootstrap_state,
    decode_configuration,
)


class LowRandom:
    """Always the lowest election timeout: transcripts must not depend on chance."""

    def randrange(self, start: int, stop: int) -> int:
        return start


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.NOOP:
        body = "noop"
    elif e.type == EntryType.CONFIGURATION:
        body = "conf" + decode_configuration(e.data).describe()
    else:
        body = repr(e.data.decode())
    return f"{e.index}/{e.term} {body}"


def fmt_msg(m: Message) -> str:
    head = f"{m.frm}->{m.to} {m.type.name} term={m.term}"
    t = m.type
    if t == MsgType.APPEND:
        ents = ", ".join(fmt_entry(e) for e in m.entries)
        return f"{head} prev={m.index}/{m.log_term} commit={m.commit} entries=[{ents}]"
    if t == MsgType.APPEND_RESP:
        if m.reject:
            return f"{head} reject index={m.index} hint={m.reject_hint}/{m.log_term}"
        return f"{head} index={m.index}"
    if t in (MsgType.VOTE, MsgType.PRE_VOTE):
        return f"{head} last={m.index}/{m.log_term}" + (" transfer" if m.transfer else "")
    if t in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
        return f"{head} {'rejected' if m.reject else 'granted'}"
    if t == MsgType.HEARTBEAT:
        return f"{head} commit={m.commit} round={m.context}"
    if t == MsgType.HEARTBEAT_RESP:
        return f"{head} round={m.context}"
    if t == MsgType.SNAPSHOT and m.snapshot is not None:
        s = m.snapshot
        return f"{head} snapshot={s.index}/{s.term} conf={s.configuration.describe()}"
    if t in (MsgType.READ_INDEX, MsgType.READ_INDEX_RESP):
        return f"{head} request={m.request_id} index={m.index}" + (" rejected" if m.reject else "")
    return head


class Recorder:
    """The transcripts' state machine: what was applied, as the transcripts print it."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def apply(self, entry: Entry, checked: bool) -> None:
        self.applied.append(fmt_entry(entry))

    def restore(self, snap: Snapshot) -> None:
        self.applied = [f"snapshot@{snap.index}"]

    def snapshot(self) -> bytes:
        return "|".join(self.applied).encode()


@dataclass
class Node:
    host: RaftHost
    storage: MemoryStorage
    machine: Recorder = field(default_factory=Recorder)

    @property
    def core(self) -> RaftCore:
        return self.host.core


class RaftEnv:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.cfg = CoreConfig()
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ plumbing

    def _new_node(self, nid: str, storage: MemoryStorage) -> Node:
        machine = Recorder()
        core = RaftCore(nid, self.cfg, LowRandom(), storage.load())
        return Node(RaftHost(core, machine, send=self.queue.append, clock=lambda: 0.0), storage, machine)

    def _blocked(self, m: Message) -> bool:
        return (m.frm, m.to) in self.cut

    def process_ready(self, nid: str, out: list[str]) -> bool:
        """One Ready of `nid` through its host, printed; False if it had none."""
        node = self.nodes[nid]
        rd = node.host.take_ready()  # queues the messages that may go before the Ready is durable
        if rd is None:
            return False
        out.append(f"> {nid} ready")
        if rd.soft_state is not None:
            lead = rd.soft_state.leader or "-"
            out.append(f"  state: {rd.soft_state.role.name.lower()} leader={lead}")
        if rd.hard_state is not None:
            h = rd.hard_state
            out.append(f"  hard-state: term={h.term} vote={h.vote or '-'} commit={h.commit}")
        if rd.snapshot is not None:
            s = rd.snapshot
            out.append(f"  snapshot: {s.index}/{s.term} conf={s.configuration.describe()}")
        if rd.entries:
            out.append("  entries: " + ", ".join(fmt_entry(e) for e in rd.entries))
        for m in rd.messages:
            out.append("  send: " + fmt_msg(m))
        node.storage.save(rd)
        for m in rd.messages_after_persist:
            out.append("  send-after-persist: " + fmt_msg(m))
        if rd.committed_entries:
            out.append("  apply: " + ", ".join(fmt_entry(e) for e in rd.committed_entries))
        for rs in rd.read_states:
            out.append(f"  read-state: request={rs.request_id} index={rs.index}")
        compaction = node.host.persisted(rd)  # queues the rest, applies, advances
        if compaction is not None:
            node.storage.save_snapshot(compaction)
            node.host.compaction_saved(compaction)
        return True

    def deliver(self, ids: list[str], drop: bool, out: list[str]) -> bool:
        keep, moved = [], False
        for m in self.queue:
            if ids and m.to not in ids:
                keep.append(m)
                continue
            moved = True
            if drop or self._blocked(m) or m.to not in self.nodes:
                out.append(f"  dropped: {fmt_msg(m)}")
                continue
            out.append(f"  deliver: {fmt_msg(m)}")
            self.nodes[m.to].host.step(m, 0.0)
        self.queue[:] = keep
        return moved

    # ------------------------------------------------------------------ commands

    def run(self, line: str) -> str:
        words = shlex.split(line)
        cmd, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        out: list[str] = []
        try:
            handler(args, out)
        except RaftError as err:
            out.append(f"error: {type(err).__name__}: {err}")
        return "\n".join(out) if out else "ok"

    def cmd_add_nodes(self, args, out) -> None:
        n = int(args[0])
        opts = dict(a.split("=", 1) for a in args[1:])
        ids = [str(i) for i in range(1, n + 1)]
        voters = opts.pop("voters", ",".join(ids)).split(",")
        names = {"election": "election_ticks", "heartbeat": "heartbeat_ticks", "lease": "leader_lease_ticks",
                 "max-append": "max_append_entries", "inflight": "max_inflight", "trailing": "trailing_logs",
                 "threshold": "snapshot_threshold", "prevote": "pre_vote", "checkquorum": "check_quorum"}
        kw = {}
        for k, v in opts.items():
            kw[names[k]] = v == "true" if v in ("true", "false") else int(v)
        self.cfg = CoreConfig(**kw)
        boot = bootstrap_state(Configuration.of(*voters))
        for nid in ids:
            storage = MemoryStorage()
            if nid in voters:
                storage.bootstrap(boot)
            self.nodes[nid] = self._new_node(nid, storage)

    def cmd_campaign(self, args, out) -> None:
        self.nodes[args[0]].core.campaign()

    def cmd_tick(self, args, out) -> None:
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            self.nodes[args[0]].host.tick()

    def cmd_tick_stabilize(self, args, out) -> None:
        for _ in range(int(args[1])):
            self.nodes[args[0]].host.tick()
            self.cmd_stabilize([], [])

    def cmd_tick_election(self, args, out) -> None:
        self.cmd_tick([args[0], str(self.cfg.election_ticks)], out)

    def cmd_tick_heartbeat(self, args, out) -> None:
        self.cmd_tick([args[0], str(self.cfg.heartbeat_ticks)], out)

    def cmd_process_ready(self, args, out) -> None:
        for nid in args or sorted(self.nodes):
            self.process_ready(nid, out)

    def cmd_deliver_msgs(self, args, out) -> None:
        drop = "drop" in args
        self.deliver([a for a in args if a != "drop"], drop, out)

    def cmd_stabilize(self, args, out) -> None:
        ids = args or sorted(self.nodes)
        for _ in range(1000):
            moved = False
            for nid in ids:
                moved |= self.process_ready(nid, out)
            moved |= self.deliver(ids, False, out)
            if not moved:
                return
        raise AssertionError("stabilize did not converge")

    def cmd_propose(self, args, out) -> None:
        index, term = self.nodes[args[0]].core.propose(args[1].encode())
        out.append(f"proposed {index}/{term}")

    def cmd_propose_conf_change(self, args, out) -> None:
        kinds = {"add-voter": ConfChangeType.ADD_VOTER, "add-nonvoter": ConfChangeType.ADD_NONVOTER,
                 "demote": ConfChangeType.DEMOTE_VOTER, "remove": ConfChangeType.REMOVE_SERVER}
        index, term = self.nodes[args[0]].core.propose_conf_change(ConfChange(kinds[args[1]], args[2]))
        out.append(f"proposed {index}/{term}")

    def cmd_transfer_leadership(self, args, out) -> None:
        target = self.nodes[args[0]].core.transfer_leadership(args[1] if len(args) > 1 else None)
        out.append(f"transferring to {target}")

    def cmd_read_index(self, args, out) -> None:
        self.nodes[args[0]].core.read_index(args[1])

    def cmd_compact(self, args, out) -> None:
        node = self.nodes[args[0]]
        c = node.core.compact(int(args[1]), node.machine.snapshot())
        node.storage.save_snapshot(c)
        out.append(f"snapshot {c.snapshot.index}/{c.snapshot.term}, log compacted to {c.compact_to}")

    def cmd_isolate(self, args, out) -> None:
        for other in self.nodes:
            if other != args[0]:
                self.cut |= {(args[0], other), (other, args[0])}

    def cmd_cut(self, args, out) -> None:
        self.cut |= {(args[0], args[1]), (args[1], args[0])}

    def cmd_recover(self, args, out) -> None:
        self.cut.clear()

    def cmd_restart(self, args, out) -> None:
        self.queue[:] = [m for m in self.queue if m.frm != args[0] and m.to != args[0]]
        self.nodes[args[0]] = self._new_node(args[0], self.nodes[args[0]].storage)

    def cmd_status(self, args, out) -> None:
        c = self.nodes[args[0]].core
        out.append(
            f"{c.id}: {c.role.name.lower()} term={c.term} vote={c.vote or '-'} leader={c.leader or '-'}"
            f" commit={c.log.committed} applied={c.log.applied} last={c.log.last_index()}"
            f" conf={c.configuration.describe()}"
        )
        for sid, pr in sorted(c.progress.items()):
            out.append(f"  {sid}: {pr.state.name.lower()} match={pr.match} next={pr.next}")

    def cmd_raft_log(self, args, out) -> None:
        c = self.nodes[args[0]].core
        if c.log.snapshot is not None:
            out.append(f"snapshot {c.log.snapshot.index}/{c.log.snapshot.term}")
        out.extend(fmt_entry(e) for e in c.log.entries)

    def cmd_raft_state(self, args, out) -> None:
        for nid in sorted(self.nodes):
            c = self.nodes[nid].core
            out.append(f"{nid}: {c.role.name.lower()} term={c.term} leader={c.leader or '-'}"
                       f" commit={c.log.committed} applied={c.log.applied}")
