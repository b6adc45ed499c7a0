"""Which server a client agent streams from, and which one next when that fails.

How it works
------------
Servers are found the way Consul's clients find them: in the LAN gossip pool, a member whose tag
`role` is `consul`, whose `dc` is this agent's datacenter and whose status is alive is a server;
its RPC address is the member's address with the port in its `port` tag. Without a gossip pool
(tests, tools) a fixed list of server RPC addresses (`host` or `host:port`, the port defaulting to
the server port) is used instead.

`ServerList.next()` returns the server to dial: the list is shuffled once per round (each client
picks a different server, which spreads the load as Consul's router does), a server that just
failed goes to the back, and `backoff_s()` grows from 0.1 s to 5 s while every server fails, with
jitter, so a client never spins on a cluster that is down. A success resets both. Plain
synchronous code: randomness is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0


def server_address(member: Any, datacenter: str) -> str:
    """The RPC address of a gossip member if it is an alive server of `datacenter`, else ""."""
    tags = getattr(member, "tags", None) or {}
    status = getattr(member, "status", "")
    status = getattr(status, "name", status)
    if tags.get("role") != "consul" or tags.get("dc", datacenter) != datacenter:
        return ""
    if str(status).lower() not in ("alive", "1", "memberstatus.alive"):
        return ""
    port = tags.get("port", "")
    if not port.isdigit():
        return ""
    addr = getattr(member, "addr", "")
    if ":" in addr:
        addr = f"[{addr}]"
    return f"{addr}:{port}"


def with_port(address: str, default_port: int) -> str:
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "]" not in port and (host.count(":") == 0 or host.endswith("]")):
        return address
    host = address.strip("[]")
    return f"[{host}]:{default_port}" if ":" in host else f"{host}:{default_port}"


class ServerList:
    """The servers a client may stream from, in the order to try them."""

    def __init__(self, *, datacenter: str, join: Iterable[str], default_port: int, rng: random.Random,
                 members: Callable[[], Iterable[Any]] | None = None) -> None:
        self.datacenter = datacenter
        self.join = tuple(with_port(a, default_port) for a in join)
        self.members = members
        self.rng = rng
        self._round: list[str] = []
        self._failures = 0
        self._last_failed = ""

    def known(self) -> list[str]:
        """Every server address known now: gossip's alive servers, or the fixed list."""
        if self.members is None:
            return list(self.join)
        found: list[str] = []
        for member in self.members():
            address = server_address(member, self.datacenter)
            if address and address not in found:
                found.append(address)
        return found

    def next(self) -> str:
        """The server to dial now ("" when none is known)."""
        known = self.known()
        self._round = [a for a in self._round if a in known]
        if not self._round:
            self._round = list(known)
            self.rng.shuffle(self._round)
            if len(self._round) > 1 and self._round[0] == self._last_failed:
                self._round.append(self._round.pop(0))  # not the one that just failed, first
        return self._round.pop(0) if self._round else ""

    def failed(self, address: str) -> None:
        self._failures += 1
        self._last_failed = address

    def succeeded(self) -> None:
        self._failures = 0

    def backoff_s(self) -> float:
        """How long to wait before the next dial: 0 after a success, then exponential with jitter."""
        if self._failures == 0:
            return 0.0
        base = min(BACKOFF_MAX_S, BACKOFF_MIN_S * (2 ** min(self._failures - 1, 10)))
        return base * (0.5 + self.rng.random() / 2)
