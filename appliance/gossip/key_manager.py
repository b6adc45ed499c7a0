"""Cluster-wide keyring operations for the gossip driver (what Serf's key manager does).

How it works
------------
`KeyManager` holds the member's `Keyring` and its file. `operation(op, key)` runs `op` (list,
install, use, remove) on every alive member: each gets `{Op, Key}` (msgpack) over stream channel
`CHANNEL_KEYRING`, sealed with the current primary key like all gossip traffic, applies it with
`apply`, saves its ring, and answers `{Result, Message, Keys, PrimaryKey}` (`handle_request`).
For `use` the local switch comes last, so every request is sealed with a key all members can
already read. The answers are tallied into a `KeyringResult` (Consul's KeyringResponse): per key,
how many members hold it and use it as primary, a message per member that refused, and "x/y
nodes reported failure" (or "x/y nodes reported success" when some did not answer).

The per-member texts are Serf's and memberlist's: "Keyring is empty (encryption not enabled)",
"No keyring to modify (encryption not enabled)", "Removing the primary key is not allowed",
"Requested key is not in the keyring", "key size must be 16, 24 or 32 bytes".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from appliance.gossip.keyring import Keyring, KeyringError, decode_key, encode_key
from appliance.gossip.keyring_file import save_file
from appliance.gossip.serf import Member, MemberStatus
from appliance.gossip.transport import CHANNEL_ERROR, CHANNEL_KEYRING, GossipTransport, StreamFailed

KEY_OPS = ("list", "install", "use", "remove")


@dataclass
class KeyringResult:
    """One pool's answer to a keyring operation (Consul's KeyringResponse)."""

    num_nodes: int = 0
    num_resp: int = 0
    num_err: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str:
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return ""

    def tally(self, node: str, ok: bool, message: str, keys: Iterable[object], primary: str) -> None:
        self.num_resp += 1
        if not ok:
            self.num_err += 1
            self.messages[node] = message
        for k in keys:
            if isinstance(k, str):
                self.keys[k] = self.keys.get(k, 0) + 1
        if primary:
            self.primary_keys[primary] = self.primary_keys.get(primary, 0) + 1


class KeyManager:
    def __init__(self, name: str, keyring: Keyring, keyring_path: str, transport: GossipTransport,
                 members: Callable[[], list[Member]], log: logging.Logger) -> None:
        self.name = name
        self.keyring = keyring
        self.keyring_path = keyring_path
        self.transport = transport
        self.members = members
        self.log = log

    def apply(self, op: str, key: bytes | None) -> tuple[bool, str]:
        """Apply one operation to this member's ring: (ok, message). Saves the ring when it changed."""
        if op not in KEY_OPS:
            return False, f"unknown keyring operation {op!r}"
        if not self.keyring:
            if op == "list":
                return False, "Keyring is empty (encryption not enabled)"
            return False, "No keyring to modify (encryption not enabled)"
        try:
            if op == "install":
                self.keyring.install(key or b"")
            elif op == "use":
                self.keyring.use(key or b"")
            elif op == "remove":
                self.keyring.remove(key or b"")
        except KeyringError as err:
            return False, str(err)
        if op != "list" and self.keyring_path:
            try:
                save_file(self.keyring_path, self.keyring.keys)
            except OSError as err:
                return False, f"Failed to write keyring file: {err}"
        return True, ""

    def _state(self) -> tuple[list[str], str]:
        primary = self.keyring.primary
        return [encode_key(k) for k in self.keyring.keys], encode_key(primary) if primary else ""

    def handle_request(self, payload: bytes) -> tuple[int, bytes]:
        """A peer's request (stream channel 2): (reply channel, reply payload)."""
        try:
            req = msgpack.unpackb(payload, raw=False)
            op, key = req["Op"], req.get("Key") or None
            if not isinstance(op, str) or (key is not None and not isinstance(key, bytes)):
                raise ValueError("bad field types")
        except Exception:  # noqa: BLE001 - garbage from a peer
            self.transport.stats["bad_streams"] += 1
            return CHANNEL_ERROR, b"malformed keyring request"
        ok, message = self.apply(op, key)
        if op != "list":
            self.log.info("serf: Received %s-key query", op)
        keys, primary = self._state()
        return CHANNEL_KEYRING, msgpack.packb({"Result": ok, "Message": message, "Keys": keys, "PrimaryKey": primary})

    async def operation(self, op: str, key_b64: str = "") -> KeyringResult:
        """Run `op` on every alive member and tally the answers (KeyringError for a bad key)."""
        if op not in KEY_OPS:
            raise ValueError(f"unknown keyring operation {op!r}")
        key = decode_key(key_b64) if op != "list" else None
        result = KeyringResult()
        peers = [m for m in self.members() if m.status == MemberStatus.ALIVE and m.name != self.name]
        result.num_nodes = len(peers) + 1
        request = msgpack.packb({"Op": op, "Key": key or b""})

        async def ask(member: Member) -> tuple[str, dict[str, Any] | None, str]:
            try:
                reply = await self.transport.request((member.addr, member.port), CHANNEL_KEYRING, request)
                answer = msgpack.unpackb(reply, raw=False)
            except StreamFailed as err:
                return member.name, None, str(err)
            except Exception as err:  # noqa: BLE001 - garbage reply
                return member.name, None, f"malformed keyring reply: {type(err).__name__}"
            if not isinstance(answer, dict):
                return member.name, None, "malformed keyring reply"
            return member.name, answer, ""

        def local() -> None:
            ok, message = self.apply(op, key)
            result.tally(self.name, ok, message, *self._state())

        if op != "use":
            local()
        answers = await asyncio.gather(*(ask(m) for m in peers))
        if op == "use":
            local()
        for name, answer, error in answers:
            if answer is None:
                self.log.warning("serf: keyring %s: no answer from %s: %s", op, name, error)
                continue
            result.tally(name, bool(answer.get("Result")), str(answer.get("Message", "")),
                         answer.get("Keys") or [], str(answer.get("PrimaryKey") or ""))
        return result
