"""The interaction environment behind the gossip transcripts (tests/transcripts/gossip/*.txt).

A few members, each the shipped sans-IO `GossipCore` (appliance/gossip/core.py) with the LAN
profile, named n1..nN at 127.0.0.1..N port 7946, on a network with no latency that only moves
datagrams and streams when a command says so (`deliver`, `stabilize`) or while time runs
(`advance`). Nothing is random: staggers are 0, a new member goes to the front of the probe list,
shuffles keep the order, so every timer fires at a time the transcript can state.

Commands (arguments in brackets are optional):

  add-nodes N                  members n1..nN at time 0, each knowing only itself
  join ID TARGET...            ID starts a join push-pull with each target (queued, not delivered)
  deliver [drop]               deliver (or drop) what is queued now, printing each datagram, stream
                               and member event; what they cause stays queued
  stabilize                    deliver until nothing is queued (time does not move)
  tick ID                      run ID's due timers now and print what it queued
  advance SECONDS              run every member's timers in time order for SECONDS, delivering
                               everything at once; prints member events only, with their time
  send FROM ID MSG             hand ID a datagram from FROM: `alive NODE INC`, `suspect NODE INC
                               BY` or `dead NODE INC BY`; prints what ID queued and its events
  leave ID / kill ID           graceful leave / stop ID silently (its timers stop, its traffic drops)
  isolate ID / recover         drop ID's traffic both ways / heal every cut
  members ID                   ID's member table (name, state, incarnation, `suspected` with a timer)
  status ID                    ID's public view (GossipCore.view()) and a few counters
"""

from __future__ import annotations

import shlex
from collections import deque
from typing import Any

from appliance.gossip.config import GossipConfig
from appliance.gossip.core import GossipCore
from appliance.gossip.members import Address
from appliance.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushPull,
    StreamError,
    Suspect,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
)
from appliance.gossip.outputs import Output, Send, StreamRequest

PORT = 7946
STATS = ("probes", "probes_ok", "probes_failed", "refutes", "push_pulls", "suspicion_verifications")


class FirstChoice:
    """No chance in transcripts: staggers are 0, random picks take the first, shuffles keep order."""

    def random(self) -> float:
        return 0.0

    def randrange(self, stop: int, /) -> int:
        return 0

    def shuffle(self, x: list[Any]) -> None:
        return None


class GossipEnv:
    def __init__(self) -> None:
        self.now = 0.0
        self.nodes: dict[str, GossipCore] = {}
        self.names: dict[Address, str] = {}
        self.down: set[str] = set()
        self.isolated: set[str] = set()
        self.queue: deque[tuple[str, Output]] = deque()
        self.lines: list[str] = []

    # ------------------------------------------------------------------ commands

    def run(self, command: str) -> str:
        self.lines = []
        args = shlex.split(command)
        name, rest = args[0], args[1:]
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        handler(*rest)
        return "\n".join(self.lines) if self.lines else "ok"

    def cmd_add_nodes(self, count: str) -> None:
        for i in range(len(self.nodes) + 1, len(self.nodes) + int(count) + 1):
            name, addr = f"n{i}", f"127.0.0.{i}"
            self.names[(addr, PORT)] = name
            self.nodes[name] = GossipCore(name, addr, PORT, GossipConfig.lan(), FirstChoice(), self.now)
            self._collect(name, quiet=True)

    def cmd_join(self, node: str, *targets: str) -> None:
        core = self.nodes[node]
        core.join([(core_.addr, core_.port) for core_ in (self.nodes[t] for t in targets)], self.now)
        self._collect(node, quiet=True)

    def cmd_deliver(self, *flags: str) -> None:
        for _ in range(len(self.queue)):
            src, out = self.queue.popleft()
            if "drop" in flags:
                self.lines.append(f"drop {self._describe(src, out)}")
                continue
            self._deliver(src, out, verbose=True)

    def cmd_stabilize(self) -> None:
        rounds = 0
        while self.queue:
            rounds += 1
            if rounds > 100:
                raise RuntimeError("stabilize: the members never went quiet")
            self.cmd_deliver()

    def cmd_tick(self, node: str) -> None:
        self.nodes[node].tick(self.now)
        self._collect(node, queued=True)

    def cmd_advance(self, seconds: str) -> None:
        target = self.now + float(seconds)
        while True:
            while self.queue:
                src, out = self.queue.popleft()
                self._deliver(src, out, verbose=False)
            due = [(d, n) for n, c in self.nodes.items() if n not in self.down
                   and (d := c.next_deadline()) is not None and d <= target]
            if not due:
                break
            when, node = min(due)
            self.now = when
            self.nodes[node].tick(when)
            self._collect(node, timed=True)
        self.now = target

    def cmd_send(self, src: str, node: str, kind: str, about: str, inc: str, by: str = "") -> None:
        msg: Message
        if kind == "alive":
            target = self.nodes[about]
            msg = Alive(int(inc), about, target.addr, target.port, target.meta)
        elif kind == "suspect":
            msg = Suspect(int(inc), about, by)
        elif kind == "dead":
            msg = Dead(int(inc), about, by)
        else:
            raise ValueError(f"send: unknown message {kind!r}")
        core = self.nodes[node]
        core.on_packet((self.nodes[src].addr, PORT), encode_packet([encode_message(msg)]), self.now)
        self._collect(node, queued=True)

    def cmd_leave(self, node: str) -> None:
        self.nodes[node].leave(self.now)
        self._collect(node, queued=True)

    def cmd_kill(self, node: str) -> None:
        self.down.add(node)

    def cmd_isolate(self, node: str) -> None:
        self.isolated.add(node)

    def cmd_recover(self) -> None:
        self.isolated.clear()

    def cmd_members(self, node: str) -> None:
        core = self.nodes[node]
        for member in sorted(core.members(), key=lambda m: m.name):
            mark = " suspected" if core.is_suspected(member.name) else ""
            self.lines.append(f"{member.name} {member.state.name.lower()} inc={member.incarnation}{mark}")

    def cmd_status(self, node: str) -> None:
        view = self.nodes[node].view()
        self.lines.append(f"t={self.now:.3f} incarnation={view.incarnation} health={view.health_score} "
                          f"probing={view.probe_target or '-'} queue={view.broadcast_queue} "
                          f"members={view.members} suspected={view.suspected}")
        self.lines.append(" ".join(f"{k}={view.stats.get(k, 0)}" for k in STATS))

    # ------------------------------------------------------------------ the network

    def _collect(self, node: str, queued: bool = False, timed: bool = False, quiet: bool = False) -> None:
        """Move what `node` sent onto the network (printing it when `queued`) and print its
        member events (with the time when `timed`)."""
        core = self.nodes[node]
        for out in core.take_outputs():
            self.queue.append((node, out))
            if queued:
                self.lines.append(f"  queued {self._describe(node, out)}")
        for event in core.take_events():
            what = f"{event.kind.value} {event.node} inc={event.incarnation}"
            if not quiet:
                self.lines.append(f"@{self.now:.3f} {node}: {what}" if timed else f"  event {node}: {what}")

    def _reachable(self, a: str, b: str) -> bool:
        return not ({a, b} & (self.down | self.isolated))

    def _deliver(self, src: str, out: Output, verbose: bool) -> None:
        if type(out) is Send:
            dest = self.names.get(out.dest, "?")
            ok = self._reachable(src, dest)
            if verbose:
                self.lines.append(("" if ok else "lost ") + self._describe(src, out))
            if ok:
                self.nodes[dest].on_packet((self.nodes[src].addr, PORT), out.data, self.now)
                self._collect(dest, timed=not verbose)
            return
        assert type(out) is StreamRequest
        dest = self.names.get(out.dest, "?")
        reply: bytes | None = None
        if self._reachable(src, dest):
            reply = self.nodes[dest].on_stream((self.nodes[src].addr, PORT), out.data, self.now)
        if verbose:
            self.lines.append(self._describe(src, out))
            self.lines.append(f"{dest}=>{src} " + (_stream_text(reply) if reply is not None else "failed"))
        if reply is not None:
            self._collect(dest, timed=not verbose)
        self.nodes[src].on_stream_reply(out.token, reply, self.now)
        self._collect(src, timed=not verbose)

    def _describe(self, src: str, out: Output) -> str:
        dest = self.names.get(out.dest, "?")
        if type(out) is Send:
            messages, _ = decode_packet(out.data)
            return f"{src}->{dest} " + ", ".join(_message_text(m) for m in messages)
        return f"{src}=>{dest} " + _stream_text(out.data)


def _message_text(msg: Message) -> str:
    if type(msg) is Ping:
        return f"ping seq={msg.seq} to={msg.node}"
    if type(msg) is IndirectPing:
        return f"ping-req seq={msg.seq} target={msg.node}"
    if type(msg) is Ack:
        return f"ack seq={msg.seq}"
    if type(msg) is Nack:
        return f"nack seq={msg.seq}"
    if type(msg) is Alive:
        return f"alive {msg.node} inc={msg.incarnation}"
    if type(msg) is Suspect:
        return f"suspect {msg.node} inc={msg.incarnation} from={msg.from_node}"
    if type(msg) is Dead:
        return f"dead {msg.node} inc={msg.incarnation} from={msg.from_node}"
    return type(msg).__name__


def _stream_text(data: bytes) -> str:
    msg = decode_stream(data)
    if type(msg) is StreamError:
        return f"error {msg.error!r}"
    assert type(msg) is PushPull
    kind = "push-pull" + (" join" if msg.join else "") + (" reply" if msg.reply else "")
    rows = " ".join(f"{n[0]}:{('alive', 'suspect', 'dead', 'left')[n[5]]}:{n[4]}"
                    for n in sorted(msg.nodes, key=lambda n: n[0]))
    return f"{kind} [{rows}]"
