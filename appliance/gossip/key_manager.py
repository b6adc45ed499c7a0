"""Cluster-wide keyring operations for the gossip driver (Serf's key manager, over queries).

How it works
------------
`KeyManager` holds the member's `Keyring` and its file. `operation(serf, op, key)` runs `op`
(list, install, use, remove) as Serf does: one internal query (`_serf_list-keys`,
`_serf_install-key`, `_serf_use-key`, `_serf_remove-key`) whose payload is `[7]` + msgpack
`{Key}`, gossiped like every query (sealed with the current primary key) and handled by this
member first. Every member applies it with `apply`, saves its ring, and answers `[8]` + msgpack
`{Result, Message, Keys, PrimaryKey}` (`handle_query`, registered on the Serf instance by
`register`); a list that does not fit Serf's 1024-byte response is cut short with a message. For
`use` the local switch therefore comes first: peers read the query with the new key, which they
hold once it is installed. Answers are tallied into a `KeyringResult` (Consul's KeyringResponse)
until every alive member (Serf's NumMembers) answered or the query's timeout: per key, how many
members hold it and use it as primary, a message per member that refused, and "x/y nodes
reported failure" (or "x/y nodes reported success" when some did not answer in time).

The per-member texts are Serf's and memberlist's: "Keyring is empty (encryption not enabled)",
"No keyring to modify (encryption not enabled)", "Removing the primary key is not allowed",
"Requested key is not in the keyring", "key size must be 16, 24 or 32 bytes".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from appliance.gossip.keyring import Keyring, KeyringError, decode_key, encode_key
from appliance.gossip.keyring_file import save_file
from appliance.gossip.queries import INTERNAL_PREFIX, QUERY_RESPONSE_SIZE_LIMIT, QueryRequest
from appliance.gossip.serf import Serf

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
    def __init__(self, name: str, keyring: Keyring, keyring_path: str, log: logging.Logger) -> None:
        self.name = name
        self.keyring = keyring
        self.keyring_path = keyring_path
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

    def register(self, serf: Serf) -> None:
        """Answer the four key queries on this Serf instance."""
        for op, query in QUERY_NAMES.items():
            serf.register_internal_query(query, functools.partial(self.handle_query, op))

    def handle_query(self, op: str, req: QueryRequest) -> bytes:
        """A key query (ours or a peer's): apply it, answer with our ring."""
        self.log.info("serf: Received %s query", QUERY_NAMES[op])
        key: bytes | None = None
        try:
            if not req.payload or req.payload[0] != KEY_REQUEST:
                raise ValueError("not a key request")
            body = msgpack.unpackb(req.payload[1:], raw=False)
            key = body.get("Key") or None if isinstance(body, dict) else None
            if key is not None and not isinstance(key, bytes):
                raise ValueError("bad key field")
        except Exception:  # noqa: BLE001 - a peer's garbage: Serf answers with the decode error
            return _response(False, "Failed to decode key request", [], "")
        ok, message = self.apply(op, key)
        primary = self.keyring.primary
        keys = [encode_key(k) for k in self.keyring.keys]
        return fit_response(ok, message, keys, encode_key(primary) if primary else "")

    async def operation(self, serf: Serf, op: str, key_b64: str = "", relay_factor: int = 0,
                        after: Callable[[], None] = lambda: None) -> KeyringResult:
        """Run `op` on every alive member and tally the answers (KeyringError for a bad key).

        `after` is the driver's hook that sends what the query queued and re-arms its timer.
        """
        if op not in KEY_OPS:
            raise ValueError(f"unknown keyring operation {op!r}")
        key = decode_key(key_b64) if op != "list" else None
        payload = bytes((KEY_REQUEST,)) + msgpack.packb({"Key": key or b""}, use_bin_type=True)
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        handle = serf.query(INTERNAL_PREFIX + QUERY_NAMES[op], payload, loop.time(), relay_factor=relay_factor)
        handle.listener = changed.set
        after()
        result = KeyringResult(num_nodes=handle.num_nodes)
        while not handle.closed and len(handle.responses) < handle.num_nodes:
            await changed.wait()
            changed.clear()
        for node, answer in sorted(handle.responses.items()):
            tally_answer(result, node, answer)
        return result


QUERY_NAMES = {"list": "list-keys", "install": "install-key", "use": "use-key", "remove": "remove-key"}
KEY_REQUEST, KEY_RESPONSE = 7, 8  # Serf's messageKeyRequestType and messageKeyResponseType


def _response(ok: bool, message: str, keys: list[str], primary: str) -> bytes:
    body = {"Result": ok, "Message": message, "Keys": keys, "PrimaryKey": primary}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((KEY_RESPONSE,)) + packed


def fit_response(ok: bool, message: str, keys: list[str], primary: str) -> bytes:
    """The answer, with the key list cut until it fits Serf's response limit (and saying so)."""
    out = _response(ok, message, keys, primary)
    shown = len(keys)
    while len(out) > QUERY_RESPONSE_SIZE_LIMIT - RESPONSE_OVERHEAD and shown > 0:
        shown -= 1
        out = _response(ok, f"truncated key list response, showing first {shown} of {len(keys)} keys",
                        keys[:shown], primary)
    return out


RESPONSE_OVERHEAD = 64  # the response message around the payload: type, LTime, ID, our name, flags


def tally_answer(result: KeyringResult, node: str, payload: bytes) -> None:
    """Serf's streamKeyResp for one member's answer."""
    try:
        if not payload or payload[0] != KEY_RESPONSE:
            raise ValueError
        answer = msgpack.unpackb(payload[1:], raw=False)
        if not isinstance(answer, dict):
            raise ValueError
    except Exception:  # noqa: BLE001 - a peer's garbage
        result.num_resp += 1
        result.num_err += 1
        result.messages[node] = f"Failed to decode key query response: {payload!r}"
        return
    message = str(answer.get("Message") or "")
    result.tally(node, bool(answer.get("Result")), message, answer.get("Keys") or [],
                 str(answer.get("PrimaryKey") or ""))
    if answer.get("Result") and message:
        result.messages[node] = message
