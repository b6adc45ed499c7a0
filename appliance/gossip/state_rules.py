"""The gossip core's state rules: what alive, suspect and dead messages and a push-pull table do
to the member table (memberlist's state.go, with cairn's changes marked "cairn:"; the rules are
described in core.py's docstring and docs/internals/gossip.md).

How it works
------------
A mixin of `GossipCore` (core.py holds the state, the inputs and outputs, probing and gossip),
split out only to keep modules short. `_alive_node`, `_suspect_node` and `_dead_node` apply one
message each with memberlist's precedence (alive needs a strictly higher incarnation, suspect and
dead an equal or higher one); a member accused at its own incarnation refutes (`_refute`). A
suspicion whose timer runs out unconfirmed gets a last-chance probe (`_verify_suspect`) before the
member is declared dead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from appliance.gossip.awareness import Awareness
from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.config import GossipConfig
from appliance.gossip.members import Address, NodeState, Rng
from appliance.gossip.messages import Alive, Dead, Message, NodeStateKind, Ping, PushPull, Suspect
from appliance.gossip.outputs import Delegate, EventKind
from appliance.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds

ALIVE, SUSPECT, DEAD, LEFT = NodeStateKind.ALIVE, NodeStateKind.SUSPECT, NodeStateKind.DEAD, NodeStateKind.LEFT


@final
class _Verify:
    """A last-chance probe of a member whose suspicion timer ran out unconfirmed."""

    __slots__ = ("timer",)

    def __init__(self, timer: Suspicion) -> None:
        self.timer = timer


class StateRules:
    """The member-table rules of `GossipCore` (a mixin: the attributes are the core's)."""

    if TYPE_CHECKING:
        config: GossipConfig
        name: str
        addr: str
        port: int
        meta: bytes
        rng: Rng
        delegate: Delegate | None
        now: float
        incarnation: int
        awareness: Awareness
        broadcasts: TransmitLimitedQueue
        stats: Counter[str]
        leaving: bool
        leave_broadcast_done: bool
        _nodes: dict[str, NodeState]
        _node_list: list[NodeState]
        _suspicions: dict[str, Suspicion]
        _handlers: dict[int, Any]
        _src: Address | None

        def call_at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None: ...

        def _emit(self, kind: EventKind, node: NodeState) -> None: ...

        def _next_seq(self) -> int: ...

        def _send_with_piggyback(self, dest: Address, msg: Message) -> None: ...

        def _send_buddy(self, node: NodeState, ping: Ping) -> None: ...

        def _queue_broadcast(self, node: str, msg: Message, on_finished: Callable[[], None] | None = None) -> None: ...

    def _merge_remote(self, msg: PushPull) -> None:
        """Apply a remote table with the normal rules: a remote 'dead' only makes us suspect."""
        me = self.name
        known = self._nodes
        for n in msg.nodes:
            state = n.state
            if state == ALIVE:
                local = known.get(n.name)
                if (local is not None and n.incarnation <= local.incarnation and n.name != me
                        and (local.state == ALIVE or local.state == SUSPECT)
                        and local.port == n.port and local.addr == n.addr):
                    continue  # nothing new (what _alive_node would conclude; most entries of a table)
                self._alive_node(Alive(n.incarnation, n.name, n.addr, n.port, n.meta))
            elif state == LEFT:
                self._dead_node(Dead(n.incarnation, n.name, n.name))
            else:
                self._suspect_node(Suspect(n.incarnation, n.name, me), from_push_pull=True)
        if self.delegate is not None and msg.user_state:
            self.delegate.merge_remote_state(msg.user_state, msg.join)

    def _set_alive(self) -> None:
        self.incarnation += 1
        self._alive_node(Alive(self.incarnation, self.name, self.addr, self.port, self.meta), bootstrap=True)

    def _alive_node(self, a: Alive, bootstrap: bool = False) -> None:
        is_local = a.node == self.name
        if is_local and self.leaving:
            return
        state = self._nodes.get(a.node)
        updates_node = False
        if state is None:
            state = NodeState(a.node, a.addr, a.port, a.meta, 0, DEAD, self.now)
            self._nodes[a.node] = state
            # Insert at a random position so a new member is probed within about one pass.
            self._node_list.append(state)
            j = self.rng.randrange(len(self._node_list))
            lst = self._node_list
            lst[-1], lst[j] = lst[j], lst[-1]
        elif state.addr != a.addr or state.port != a.port:
            reclaim = self.config.dead_node_reclaim_time_s
            can_reclaim = reclaim > 0 and self.now - state.state_change > reclaim
            if state.state == LEFT or (state.state == DEAD and can_reclaim):
                updates_node = True
            else:
                self.stats["conflicts"] += 1
                return
        if not is_local and not updates_node and a.incarnation <= state.incarnation:
            if state.state == DEAD:
                self._accuse_directly(state)
            return
        if is_local and a.incarnation < state.incarnation:
            return
        self._suspicions.pop(a.node, None)
        old_state, old_meta = state.state, state.meta
        if is_local and not bootstrap:
            if a.incarnation == state.incarnation and a.meta == state.meta:
                return
            self._refute(state, a.incarnation)
            return
        self._queue_broadcast(a.node, a)
        self.stats["msg_alive"] += 1  # an accepted alive (memberlist.msg.alive)
        state.incarnation = a.incarnation
        state.meta, state.addr, state.port = a.meta, a.addr, a.port
        if state.state != ALIVE:
            state.state = ALIVE
            state.state_change = self.now
        if old_state in (DEAD, LEFT):
            self._emit(EventKind.JOIN, state)
        elif old_meta != state.meta:
            self._emit(EventKind.UPDATE, state)

    def _suspect_node(self, s: Suspect, from_push_pull: bool = False) -> None:
        """memberlist suspectNode, with two cairn changes (docs/internals/gossip.md):

        * a stale accusation about ourselves (older incarnation) re-queues our current alive, so a
          member that missed our refutation gets it again (memberlist ignores it);
        * a suspicion learned from push-pull state is second-hand: it never confirms a running
          timer and is not gossiped on (many members merging one stale table after a partition
          heals would otherwise look like many independent witnesses); the accused is told
          directly so it can refute.
        """
        state = self._nodes.get(s.node)
        if state is None:
            return
        if s.incarnation < state.incarnation:
            if s.node == self.name:
                self._stale_accusation(state)
            else:
                self._correct_sender(state)
            return
        timer = self._suspicions.get(s.node)
        if timer is not None:
            if from_push_pull:
                return
            if timer.confirm(s.from_node):
                self._queue_broadcast(s.node, s)
                self.call_at(self._verify_start(timer), self._suspicion_fired, (s.node, timer, state.state_change))
            return
        if state.state != ALIVE:
            return
        if s.node == self.name:
            self._refute(state, s.incarnation)
            return
        if from_push_pull:
            self._send_with_piggyback(state.address, s)
        else:
            self._queue_broadcast(s.node, s)
        self.stats["msg_suspect"] += 1  # a member newly suspected (memberlist.msg.suspect)
        state.incarnation = s.incarnation
        state.state = SUSPECT
        state.state_change = self.now
        cfg = self.config
        n = len(self._nodes)
        low, high = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_s)
        k = expected_confirmations(cfg.suspicion_mult, n)
        timer = Suspicion(s.from_node, k, low, high, self.now, s.incarnation)
        self._suspicions[s.node] = timer
        self.call_at(self._verify_start(timer), self._suspicion_fired, (s.node, timer, state.state_change))
        self._emit(EventKind.SUSPECT, state)

    def _verify_window(self) -> float:
        return self.awareness.scale_timeout(self.config.probe_interval_s)

    def _verify_start(self, timer: Suspicion) -> float:
        """cairn: the last-chance probe (below) starts one awareness-scaled probe deadline before
        the suspicion times out, so that its verdict lands when memberlist's would."""
        return max(self.now, timer.deadline() - self._verify_window())

    def _suspicion_fired(self, arg: tuple[str, Suspicion, float]) -> None:
        name, timer, change_time = arg
        if self._suspicions.get(name) is not timer or timer.verifying:
            return  # refuted, superseded, or already being verified
        state = self._nodes.get(name)
        if state is None or state.state != SUSPECT or state.state_change != change_time:
            return
        if self._verify_start(timer) > self.now:  # our health improved since: the window shrank
            self.call_at(self._verify_start(timer), self._suspicion_fired, arg)
            return
        self._verify_suspect(state, timer, change_time)

    def _verify_suspect(self, state: NodeState, timer: Suspicion, change_time: float) -> None:
        """cairn: before a suspicion timer kills a member, send it the accusation with a ping
        twice (now and after probe_timeout_s) and wait one awareness-scaled probe deadline, and
        at least until the suspicion times out. A live member refutes and the refutation rides
        back on the ack, so a lone liar, a refutation lost on the way to us, or one stuck behind a
        post-partition backlog of broadcasts can no longer get a live member declared dead. The
        probe starts one deadline early (`_verify_start`), so a real death costs no extra time."""
        timer.verifying = True
        self.stats["suspicion_verifications"] += 1
        seq = self._next_seq()
        self._handlers[seq] = _Verify(timer)
        ping = Ping(seq, state.name, self.name, self.addr, self.port)
        self._send_buddy(state, ping)
        self.call_at(self.now + self.config.probe_timeout_s, self._verify_retry, (seq, state, ping))
        deadline = max(self.now + self._verify_window(), timer.deadline())
        self.call_at(deadline, self._verify_done, (seq, state.name, timer, change_time))

    def _verify_retry(self, arg: tuple[int, NodeState, Ping]) -> None:
        seq, state, ping = arg
        handler = self._handlers.get(seq)
        if type(handler) is _Verify and not handler.timer.acked and self._suspicions.get(state.name) is handler.timer:
            self._send_buddy(state, ping)

    def _verify_done(self, arg: tuple[int, str, Suspicion, float]) -> None:
        seq, name, timer, change_time = arg
        self._handlers.pop(seq, None)
        state = self._nodes.get(name)
        if self._suspicions.get(name) is not timer or state is None or state.state != SUSPECT:
            return  # refuted meanwhile
        if state.state_change != change_time:
            return
        if timer.acked:
            # It answered but its refutation did not reach us: suspect it afresh (full maximum).
            self.stats["suspicion_restarted"] += 1
            fresh = Suspicion(self.name, timer.k, timer.low, timer.high, self.now, timer.incarnation)
            self._suspicions[name] = fresh
            self.call_at(self._verify_start(fresh), self._suspicion_fired, (name, fresh, change_time))
            return
        if not timer.fully_confirmed():
            self.stats["suspicion_degraded"] += 1
        self._dead_node(Dead(timer.incarnation, name, self.name))

    def _dead_node(self, d: Dead) -> None:
        state = self._nodes.get(d.node)
        if state is None:
            return
        if d.incarnation < state.incarnation:
            if d.node == self.name and not self.leaving:
                self._stale_accusation(state)
            elif d.node != self.name:
                self._correct_sender(state)
            return
        if state.dead_or_left():
            self._suspicions.pop(d.node, None)
            return
        if d.from_node != d.node and d.from_node != self.name and d.node != self.name:
            # cairn: another member's death verdict is one more witness, not a verdict for us: it
            # starts or confirms our own suspicion, and only our own timer (or the member's own
            # leave) makes it dead here. Otherwise each side of a healed partition declares the
            # other side's survivors dead on arrival (a flap storm), and one liar's dead
            # message fails a healthy member.
            self.stats["dead_as_suspect"] += 1
            self._suspect_node(Suspect(d.incarnation, d.node, d.from_node))
            return
        self._suspicions.pop(d.node, None)
        if d.node == self.name:
            if not self.leaving:
                self._refute(state, d.incarnation)
                return
            self._queue_broadcast(d.node, d, on_finished=self._leave_finished)
        else:
            self._queue_broadcast(d.node, d)
        self.stats["msg_dead"] += 1  # a member declared dead or left (memberlist.msg.dead)
        state.incarnation = d.incarnation
        state.state = LEFT if d.from_node == d.node else DEAD
        state.state_change = self.now
        self._emit(EventKind.LEAVE if state.state == LEFT else EventKind.FAIL, state)

    def _leave_finished(self) -> None:
        self.leave_broadcast_done = True

    def _accuse_directly(self, state: NodeState) -> None:
        """cairn: an alive no newer than the death we hold means the member may be alive and
        unaware of it (after a partition heals, or after it missed the news). Tell it directly,
        at most once per probe interval: it refutes, and the refutation rides back on the ack
        (memberlist ignores the stale alive and can stay split until a later push-pull)."""
        if self.leaving or self.now - state.accused_at < self.config.probe_interval_s:
            return
        state.accused_at = self.now
        self.stats["direct_accusations"] += 1
        self._send_buddy(state, Ping(self._next_seq(), state.name, self.name, self.addr, self.port))

    def _correct_sender(self, state: NodeState) -> None:
        """cairn: a peer told us about an older incarnation of a member we know alive: send that
        peer our newer alive (at most once per probe interval per member), so views split by a
        partition or a lost refutation heal without waiting for the next push-pull."""
        src = self._src
        if src is None or state.state != ALIVE or self.now - state.accused_at < self.config.probe_interval_s:
            return
        state.accused_at = self.now
        self.stats["corrections"] += 1
        self._send_with_piggyback(src, Alive(state.incarnation, state.name, state.addr, state.port, state.meta))

    def _stale_accusation(self, me: NodeState) -> None:
        """Someone still accuses an older incarnation of us: send our current alive out again
        (unless a fresh copy is already waiting in the queue)."""
        if self.leaving or self.broadcasts.transmits_of(self.name) == 0:
            return
        self.stats["stale_accusations"] += 1
        self._queue_broadcast(self.name, Alive(me.incarnation, self.name, self.addr, self.port, self.meta))

    def _refute(self, me: NodeState, accused_incarnation: int) -> None:
        inc = max(self.incarnation + 1, accused_incarnation + 1)
        self.incarnation = inc
        me.incarnation = inc
        self.awareness.apply_delta(1)
        self.stats["refutes"] += 1
        self._queue_broadcast(self.name, Alive(inc, self.name, self.addr, self.port, self.meta))
