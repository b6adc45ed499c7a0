"""The member table's transitions: what alive, suspect and dead messages do to a member's state
and incarnation, refutation, and the suspicion timers that end in dead (memberlist's state.go,
with cairn's changes marked "cairn:"; sans-IO).

How it works
------------
`alive_node`, `suspect_node` and `dead_node` apply one message each, in memberlist's precedence
(docs/internals/gossip.md "Member states and incarnations"; the state tables of memberlist's
`aliveNode`, `suspectNode` and `deadNode`):

* alive(X, j) needs `j` above the incarnation held (or X unknown, or an address reclaim); it
  cancels a suspicion, re-broadcasts, and reports JOIN (X was dead or left) or UPDATE (new meta);
* suspect(X, j) needs `j` at or above it and X alive; it starts a Lifeguard suspicion timer
  (suspicion.py), or confirms a running one when the sender is new;
* dead(X, j) from X itself is a leave (LEFT); from a third member it is a witness for our own
  suspicion (cairn); our own timer's verdict makes X dead (FAIL).

Only a member raises its own incarnation: accused at or above it, it refutes with
`max(ours + 1, j + 1)` and +1 awareness. A suspicion whose timer runs out first gets a
last-chance probe (`_verify_suspect`, cairn) before the member is declared dead.
"""

from __future__ import annotations

from typing import final

from appliance.gossip.context import CoreContext
from appliance.gossip.dissemination import Dissemination
from appliance.gossip.member_table import MemberTable
from appliance.gossip.members import NodeState
from appliance.gossip.messages import Alive, Dead, NodeStateKind, Ping, Suspect
from appliance.gossip.outputs import EventKind
from appliance.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds

ALIVE, SUSPECT, DEAD, LEFT = NodeStateKind.ALIVE, NodeStateKind.SUSPECT, NodeStateKind.DEAD, NodeStateKind.LEFT


@final
class Verify:
    """A last-chance probe of a member whose suspicion timer ran out unconfirmed (an ack handler)."""

    __slots__ = ("timer",)

    def __init__(self, timer: Suspicion) -> None:
        self.timer = timer


@final
class MemberTransitions:
    """The local member's incarnation and metadata, the running suspicions, and the rules that
    move members between alive, suspect, dead and left."""

    def __init__(self, ctx: CoreContext, table: MemberTable, out: Dissemination, meta: bytes) -> None:
        self.ctx = ctx
        self.table = table
        self.out = out
        self.meta = meta
        self.incarnation = 0
        self.suspicions: dict[str, Suspicion] = {}

    def is_suspected(self, name: str) -> bool:
        return name in self.suspicions

    def leave(self) -> None:
        """Announce our departure: dead about ourselves, from ourselves (`left` everywhere)."""
        ctx = self.ctx
        if ctx.leaving:
            return
        ctx.leaving = True
        me = self.table.nodes[ctx.name]
        if not any(n.state == ALIVE and n.name != ctx.name for n in self.table.order):
            ctx.leave_broadcast_done = True
        self.dead_node(Dead(me.incarnation, ctx.name, ctx.name))

    def update_meta(self, meta: bytes) -> None:
        """Change our metadata (Serf tags): new incarnation, alive broadcast, UPDATE events."""
        ctx = self.ctx
        self.meta = meta
        self.incarnation += 1
        self.alive_node(Alive(self.incarnation, ctx.name, ctx.addr, ctx.port, meta), bootstrap=True)

    def set_alive(self) -> None:
        """Take the next incarnation and announce ourselves alive (at start)."""
        ctx = self.ctx
        self.incarnation += 1
        self.alive_node(Alive(self.incarnation, ctx.name, ctx.addr, ctx.port, self.meta), bootstrap=True)

    def alive_node(self, a: Alive, bootstrap: bool = False) -> None:
        ctx = self.ctx
        is_local = a.node == ctx.name
        if is_local and ctx.leaving:
            return
        if not bootstrap and ctx.delegate is not None and not ctx.delegate.check_alive(a):
            return  # memberlist's alive delegate (Consul: a member of another datacenter)
        state = self.table.get(a.node)
        updates_node = False
        if state is None:
            state = NodeState(a.node, a.addr, a.port, a.meta, 0, DEAD, ctx.now)
            self.table.add(state)  # at a random position, so it is probed within about one pass
        elif state.addr != a.addr or state.port != a.port:
            reclaim = ctx.config.dead_node_reclaim_time_s
            can_reclaim = reclaim > 0 and ctx.now - state.state_change > reclaim
            if state.state == LEFT or (state.state == DEAD and can_reclaim):
                updates_node = True
            else:
                ctx.stats["conflicts"] += 1
                if ctx.delegate is not None:
                    ctx.delegate.notify_conflict(state.name, state.address, a, int(state.state))
                return
        if not is_local and not updates_node and a.incarnation <= state.incarnation:
            if state.state == DEAD:
                self._accuse_directly(state)
            return
        if is_local and a.incarnation < state.incarnation:
            return
        self.suspicions.pop(a.node, None)
        old_state, old_meta = state.state, state.meta
        if is_local and not bootstrap:
            if a.incarnation == state.incarnation and a.meta == state.meta:
                return
            self._refute(state, a.incarnation)
            return
        self.out.queue_broadcast(a.node, a)
        ctx.stats["msg_alive"] += 1  # an accepted alive (memberlist.msg.alive)
        state.incarnation = a.incarnation
        state.meta, state.addr, state.port = a.meta, a.addr, a.port
        if state.state != ALIVE:
            state.state = ALIVE
            state.state_change = ctx.now
        if old_state in (DEAD, LEFT):
            ctx.emit(EventKind.JOIN, state)
        elif old_meta != state.meta:
            ctx.emit(EventKind.UPDATE, state)

    def suspect_node(self, s: Suspect, from_push_pull: bool = False) -> None:
        """memberlist suspectNode, with two cairn changes (docs/internals/gossip.md):

        * a stale accusation about ourselves (older incarnation) re-queues our current alive, so a
          member that missed our refutation gets it again (memberlist ignores it);
        * a suspicion learned from push-pull state is second-hand: it never confirms a running
          timer and is not gossiped on (many members merging one stale table after a partition
          heals would otherwise look like many independent witnesses); the accused is told
          directly so it can refute.
        """
        ctx = self.ctx
        state = self.table.get(s.node)
        if state is None:
            return
        if s.incarnation < state.incarnation:
            if s.node == ctx.name:
                self._stale_accusation(state)
            else:
                self._correct_sender(state)
            return
        timer = self.suspicions.get(s.node)
        if timer is not None:
            if from_push_pull:
                return
            if timer.confirm(s.from_node):
                self.out.queue_broadcast(s.node, s)
                ctx.call_at(self._verify_start(timer), self._suspicion_fired, (s.node, timer, state.state_change))
            return
        if state.state != ALIVE:
            return
        if s.node == ctx.name:
            self._refute(state, s.incarnation)
            return
        if from_push_pull:
            self.out.send_with_piggyback(state.address, s)
        else:
            self.out.queue_broadcast(s.node, s)
        ctx.stats["msg_suspect"] += 1  # a member newly suspected (memberlist.msg.suspect)
        state.incarnation = s.incarnation
        state.state = SUSPECT
        state.state_change = ctx.now
        cfg = ctx.config
        n = len(self.table)
        low, high = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_s)
        k = expected_confirmations(cfg.suspicion_mult, n)
        timer = Suspicion(s.from_node, k, low, high, ctx.now, s.incarnation)
        self.suspicions[s.node] = timer
        ctx.call_at(self._verify_start(timer), self._suspicion_fired, (s.node, timer, state.state_change))
        ctx.emit(EventKind.SUSPECT, state)

    def _verify_window(self) -> float:
        ctx = self.ctx
        return ctx.awareness.scale_timeout(ctx.config.probe_interval_s)

    def _verify_start(self, timer: Suspicion) -> float:
        """cairn: the last-chance probe (below) starts one awareness-scaled probe deadline before
        the suspicion times out, so that its verdict lands when memberlist's would."""
        ctx = self.ctx
        return max(ctx.now, timer.deadline() - self._verify_window())

    def _suspicion_fired(self, arg: tuple[str, Suspicion, float]) -> None:
        ctx = self.ctx
        name, timer, change_time = arg
        if self.suspicions.get(name) is not timer or timer.verifying:
            return  # refuted, superseded, or already being verified
        state = self.table.get(name)
        if state is None or state.state != SUSPECT or state.state_change != change_time:
            return
        if self._verify_start(timer) > ctx.now:  # our health improved since: the window shrank
            ctx.call_at(self._verify_start(timer), self._suspicion_fired, arg)
            return
        self._verify_suspect(state, timer, change_time)

    def _verify_suspect(self, state: NodeState, timer: Suspicion, change_time: float) -> None:
        """cairn: before a suspicion timer kills a member, send it the accusation with a ping
        twice (now and after probe_timeout_s) and wait one awareness-scaled probe deadline, and
        at least until the suspicion times out. A live member refutes and the refutation rides
        back on the ack, so a lone liar, a refutation lost on the way to us, or one stuck behind a
        post-partition backlog of broadcasts can no longer get a live member declared dead. The
        probe starts one deadline early (`_verify_start`), so a real death costs no extra time."""
        ctx = self.ctx
        timer.verifying = True
        ctx.stats["suspicion_verifications"] += 1
        seq = ctx.next_seq()
        ctx.handlers[seq] = Verify(timer)
        ping = Ping(seq, state.name, ctx.name, ctx.addr, ctx.port)
        self.out.send_buddy(state, ping)
        ctx.call_at(ctx.now + ctx.config.probe_timeout_s, self._verify_retry, (seq, state, ping))
        deadline = max(ctx.now + self._verify_window(), timer.deadline())
        ctx.call_at(deadline, self._verify_done, (seq, state.name, timer, change_time))

    def _verify_retry(self, arg: tuple[int, NodeState, Ping]) -> None:
        ctx = self.ctx
        seq, state, ping = arg
        handler = ctx.handlers.get(seq)
        if type(handler) is Verify and not handler.timer.acked and self.suspicions.get(state.name) is handler.timer:
            self.out.send_buddy(state, ping)

    def _verify_done(self, arg: tuple[int, str, Suspicion, float]) -> None:
        ctx = self.ctx
        seq, name, timer, change_time = arg
        ctx.handlers.pop(seq, None)
        state = self.table.get(name)
        if self.suspicions.get(name) is not timer or state is None or state.state != SUSPECT:
            return  # refuted meanwhile
        if state.state_change != change_time:
            return
        if timer.acked:
            # It answered but its refutation did not reach us: suspect it afresh (full maximum).
            ctx.stats["suspicion_restarted"] += 1
            fresh = Suspicion(ctx.name, timer.k, timer.low, timer.high, ctx.now, timer.incarnation)
            self.suspicions[name] = fresh
            ctx.call_at(self._verify_start(fresh), self._suspicion_fired, (name, fresh, change_time))
            return
        if not timer.fully_confirmed():
            ctx.stats["suspicion_degraded"] += 1
        self.dead_node(Dead(timer.incarnation, name, ctx.name))

    def dead_node(self, d: Dead) -> None:
        ctx = self.ctx
        state = self.table.get(d.node)
        if state is None:
            return
        if d.incarnation < state.incarnation:
            if d.node == ctx.name and not ctx.leaving:
                self._stale_accusation(state)
            elif d.node != ctx.name:
                self._correct_sender(state)
            return
        if state.dead_or_left():
            self.suspicions.pop(d.node, None)
            return
        if d.from_node != d.node and d.from_node != ctx.name and d.node != ctx.name:
            # cairn: another member's death verdict is one more witness, not a verdict for us: it
            # starts or confirms our own suspicion, and only our own timer (or the member's own
            # leave) makes it dead here. Otherwise each side of a healed partition declares the
            # other side's survivors dead on arrival (a flap storm), and one liar's dead
            # message fails a healthy member.
            ctx.stats["dead_as_suspect"] += 1
            self.suspect_node(Suspect(d.incarnation, d.node, d.from_node))
            return
        self.suspicions.pop(d.node, None)
        if d.node == ctx.name:
            if not ctx.leaving:
                self._refute(state, d.incarnation)
                return
            self.out.queue_broadcast(d.node, d, on_finished=self._leave_finished)
        else:
            self.out.queue_broadcast(d.node, d)
        ctx.stats["msg_dead"] += 1  # a member declared dead or left (memberlist.msg.dead)
        state.incarnation = d.incarnation
        state.state = LEFT if d.from_node == d.node else DEAD
        state.state_change = ctx.now
        ctx.emit(EventKind.LEAVE if state.state == LEFT else EventKind.FAIL, state)

    def _leave_finished(self) -> None:
        ctx = self.ctx
        ctx.leave_broadcast_done = True

    def _accuse_directly(self, state: NodeState) -> None:
        """cairn: an alive no newer than the death we hold means the member may be alive and
        unaware of it (after a partition heals, or after it missed the news). Tell it directly,
        at most once per probe interval: it refutes, and the refutation rides back on the ack
        (memberlist ignores the stale alive and can stay split until a later push-pull)."""
        ctx = self.ctx
        if ctx.leaving or ctx.now - state.accused_at < ctx.config.probe_interval_s:
            return
        state.accused_at = ctx.now
        ctx.stats["direct_accusations"] += 1
        self.out.send_buddy(state, Ping(ctx.next_seq(), state.name, ctx.name, ctx.addr, ctx.port))

    def _correct_sender(self, state: NodeState) -> None:
        """cairn: a peer told us about an older incarnation of a member we know alive: send that
        peer our newer alive (at most once per probe interval per member), so views split by a
        partition or a lost refutation heal without waiting for the next push-pull."""
        ctx = self.ctx
        src = ctx.src
        if src is None or state.state != ALIVE or ctx.now - state.accused_at < ctx.config.probe_interval_s:
            return
        state.accused_at = ctx.now
        ctx.stats["corrections"] += 1
        self.out.send_with_piggyback(src, Alive(state.incarnation, state.name, state.addr, state.port, state.meta))

    def _stale_accusation(self, me: NodeState) -> None:
        """Someone still accuses an older incarnation of us: send our current alive out again
        (unless a fresh copy is already waiting in the queue)."""
        ctx = self.ctx
        if ctx.leaving or self.out.queue.transmits_of(ctx.name) == 0:
            return
        ctx.stats["stale_accusations"] += 1
        self.out.queue_broadcast(ctx.name, Alive(me.incarnation, ctx.name, ctx.addr, ctx.port, self.meta))

    def _refute(self, me: NodeState, accused_incarnation: int) -> None:
        ctx = self.ctx
        inc = max(self.incarnation + 1, accused_incarnation + 1)
        self.incarnation = inc
        me.incarnation = inc
        ctx.awareness.apply_delta(1)
        ctx.stats["refutes"] += 1
        self.out.queue_broadcast(ctx.name, Alive(inc, ctx.name, ctx.addr, ctx.port, self.meta))
