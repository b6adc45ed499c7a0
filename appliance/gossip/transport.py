"""Gossip sockets: UDP datagrams and TCP streams on one port (serf_lan, 8301), with encryption.

How it works
------------
memberlist's layout: one UDP socket for probes and gossip and one TCP listener on the *same*
port for streams. Every stream carries exactly one request and one reply, then closes.

**Packets.** A datagram is the core's packet (`messages.encode_packet`), sealed with the primary
key when the keyring is not empty and `encrypt_verify_outgoing` is on (`keyring.py`: version
byte, 12-byte nonce, AES-GCM ciphertext and tag; 29 bytes of overhead). On receipt: anything
above `MAX_PACKET_BYTES` is dropped; with a keyring every key is tried; a packet no key opens is
dropped and counted (`decrypt_failed`) when `encrypt_verify_incoming` is on, and handed on as
plaintext when it is off (the middle step of rolling encryption onto a running pool).

**Streams.** One frame each way::

    [kind u8][length u32 big endian][body]
    kind 1 (plain):     body = [channel u8][payload]
    kind 10 (sealed):   body = keyring.encrypt([channel u8][payload], aad = the 5 header bytes)

Channels: 1 = the gossip core (push-pull and join), 0 = an error reply
(UTF-8 text, always sent plain so a peer without our key can read why it was refused). A sealed
stream reaching an agent without keys, or a plain one reaching an agent that verifies incoming
traffic, is answered with an error ("encryption is configured but remote state is not
encrypted", memberlist's text). A frame above `MAX_STREAM_BYTES`, a short read, a bad kind or a
stream that does not arrive within the TCP timeout is counted and the connection closed.
`last_packet_sealed` says whether the datagram being handled was opened with a key: the driver
refuses key queries that arrive in the clear whenever this agent has keys, even with verification
off, so nobody without a key can change the ring of a pool that is being rolled onto encryption. At most
`MAX_INBOUND_STREAMS` inbound streams are served at once (memberlist's push-pull cap); more are
refused.

Nothing here interprets gossip messages: the driver hands packets and stream payloads to the
sans-IO core and sends what it returns. Counters (`stats`) feed `consul.memberlist.udp.*`,
`consul.memberlist.tcp.*` and the garbage counts in /v1/agent/self.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.gossip.keyring import ENCRYPT_OVERHEAD, Keyring, KeyringError
from appliance.gossip.members import Address
from appliance.gossip.messages import MAX_PACKET_BYTES, MAX_STREAM_BYTES

STREAM_HEADER = struct.Struct(">BI")
KIND_PLAIN = 1
KIND_SEALED = 10
CHANNEL_ERROR = 0
CHANNEL_GOSSIP = 1
MAX_FRAME_BYTES = MAX_STREAM_BYTES + 1 + ENCRYPT_OVERHEAD
MAX_INBOUND_STREAMS = 127  # memberlist refuses the 128th concurrent push-pull
UDP_RECV_BUFFER = 2 << 20  # memberlist asks the kernel for 2 MiB

log = logging.getLogger("agent.memberlist.lan")

StreamHandler = Callable[[Address, int, bytes], Awaitable[tuple[int, bytes]]]


class StreamFailed(Exception):
    """A stream exchange that produced no usable reply (the text says why)."""


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, transport: GossipTransport) -> None:
        self.owner = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._packet_in(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.owner.stats["udp_errors"] += 1


class GossipTransport:
    """The UDP socket and TCP listener of one gossip pool."""

    def __init__(self, bind: str, port: int, *, keyring: Keyring, on_packet: Callable[[Address, bytes], None],
                 on_stream: StreamHandler, verify_incoming: bool = True, verify_outgoing: bool = True,
                 tcp_timeout_s: float = 10.0) -> None:
        self.bind = bind
        self.port = port
        self.keyring = keyring
        self.last_packet_sealed = False  # the datagram being handled was decrypted with a key
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing
        self.tcp_timeout_s = tcp_timeout_s
        self._on_packet = on_packet
        self._on_stream = on_stream
        self.stats: Counter[str] = Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._inbound = 0
        self._conns: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind TCP first (port 0 picks a free one), then UDP on the same port."""
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_stream, self.bind, self.port, limit=1 << 16)
        self.port = self._tcp.sockets[0].getsockname()[1]
        try:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self),
                                                               local_addr=(self.bind, self.port))
        except OSError:
            self._tcp.close()
            raise
        sock = self._udp.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECV_BUFFER)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def encrypting(self) -> bool:
        return bool(self.keyring) and self.verify_outgoing

    # ------------------------------------------------------------------ packets

    def send_packet(self, dest: Address, data: bytes) -> None:
        if self._udp is None:
            return
        if self.encrypting:
            data = self.keyring.encrypt(data)
        try:
            self._udp.sendto(data, dest)
        except (OSError, ValueError):  # unreachable network, bad address: a lost datagram
            self.stats["udp_errors"] += 1
            return
        self.stats["udp_sent"] += len(data)

    def _packet_in(self, data: bytes, src: Address) -> None:
        self.stats["udp_received"] += len(data)
        if len(data) > MAX_PACKET_BYTES:
            self.stats["oversized_packets"] += 1
            return
        sealed = False
        if self.keyring:
            try:
                data = self.keyring.decrypt(data)
                sealed = True
            except KeyringError:
                if self.verify_incoming:
                    self.stats["decrypt_failed"] += 1
                    return
        self.last_packet_sealed = sealed
        try:
            self._on_packet(src, data)
        except Exception:  # a bug in the handler must not stop the socket
            self.stats["packet_handler_errors"] += 1
            log.exception("memberlist: error handling a packet from %s:%d", *src)

    # ------------------------------------------------------------------ stream framing

    def _seal(self, channel: int, payload: bytes, *, plain: bool = False) -> bytes:
        body = bytes((channel,)) + payload
        if self.encrypting and not plain:
            header = STREAM_HEADER.pack(KIND_SEALED, len(body) + ENCRYPT_OVERHEAD)
            return header + self.keyring.encrypt(body, header)
        return STREAM_HEADER.pack(KIND_PLAIN, len(body)) + body

    async def _read_frame(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        """(channel, payload, sealed) of one frame; StreamFailed for anything unusable."""
        try:
            header = await reader.readexactly(STREAM_HEADER.size)
        except asyncio.IncompleteReadError:
            raise StreamFailed("stream closed before a frame header") from None
        kind, length = STREAM_HEADER.unpack(header)
        if kind not in (KIND_PLAIN, KIND_SEALED):
            raise StreamFailed(f"received invalid msgType ({kind})")  # memberlist's words
        if length > MAX_FRAME_BYTES:
            raise StreamFailed("remote node state is larger than limit")
        if length < 1:
            raise StreamFailed("empty stream frame")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise StreamFailed("truncated stream frame") from None
        if kind == KIND_SEALED:
            if not self.keyring:
                raise StreamFailed("received encrypted stream, but encryption is not configured")
            try:
                body = self.keyring.decrypt(body, header)
            except KeyringError as err:
                raise StreamFailed(str(err)) from None
            if not body:
                raise StreamFailed("empty stream frame")
        elif body[0] != CHANNEL_ERROR and self.keyring and self.verify_incoming:
            raise StreamFailed("encryption is configured but remote state is not encrypted")
        return body[0], body[1:], kind == KIND_SEALED

    # ------------------------------------------------------------------ outbound streams

    async def request(self, dest: Address, channel: int, payload: bytes, timeout_s: float | None = None) -> bytes:
        """Open a stream to `dest`, send one frame, return the reply payload (StreamFailed if none)."""
        timeout = self.tcp_timeout_s if timeout_s is None else max(0.01, timeout_s)
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(dest[0], dest[1], limit=1 << 16)
                frame = self._seal(channel, payload)
                writer.write(frame)
                await writer.drain()
                self.stats["tcp_sent"] += len(frame)
                self.stats["tcp_connect"] += 1
                reply_channel, reply, _ = await self._read_frame(reader)
        except TimeoutError:
            self.stats["stream_failures"] += 1
            raise StreamFailed(f"i/o timeout after {timeout:g}s") from None
        except OSError as err:
            self.stats["stream_failures"] += 1
            raise StreamFailed(err.strerror or str(err)) from None
        except StreamFailed:
            self.stats["stream_failures"] += 1
            raise
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if reply_channel == CHANNEL_ERROR:
            self.stats["stream_failures"] += 1
            raise StreamFailed(reply.decode("utf-8", "replace")[:1024])
        if reply_channel != channel:
            self.stats["stream_failures"] += 1
            raise StreamFailed(f"reply on channel {reply_channel}, expected {channel}")
        return reply

    # ------------------------------------------------------------------ inbound streams

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        peer = writer.get_extra_info("peername") or ("", 0)
        src: Address = (peer[0], peer[1])
        self.stats["tcp_accept"] += 1
        try:
            if self._inbound >= MAX_INBOUND_STREAMS:
                self.stats["streams_refused"] += 1
                return
            self._inbound += 1
            try:
                await self._answer(reader, writer, src)
            finally:
                self._inbound -= 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            self.stats["stream_errors"] += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._conns.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, src: Address) -> None:
        try:
            async with asyncio.timeout(self.tcp_timeout_s):
                channel, payload, _ = await self._read_frame(reader)
        except StreamFailed as err:
            self.stats["bad_streams"] += 1
            if "encrypt" in str(err) or "decrypt" in str(err) or "keyring" in str(err):
                self.stats["decrypt_failed"] += 1
            log.warning("memberlist: failed to receive stream from %s:%d: %s", src[0], src[1], err)
            writer.write(self._seal(CHANNEL_ERROR, str(err).encode(), plain=True))
            await writer.drain()
            return
        try:
            reply_channel, reply = await self._on_stream(src, channel, payload)
        except Exception as err:  # a bug in the handler: answer with an error, keep serving
            self.stats["stream_handler_errors"] += 1
            log.exception("memberlist: error handling a stream from %s:%d", *src)
            reply_channel, reply = CHANNEL_ERROR, f"internal error: {type(err).__name__}".encode()
        frame = self._seal(reply_channel, reply, plain=reply_channel == CHANNEL_ERROR)
        writer.write(frame)
        self.stats["tcp_sent"] += len(frame)
        await writer.drain()
