"""Batched UDP reads and writes: Linux's recvmmsg(2) and sendmmsg(2) through ctypes.

Python's socket module reads and writes one datagram per system call. A cached DNS answer costs
about a microsecond of Python, so the two calls per query (recvfrom, sendto) and their wrappers
are most of the work. `Batch` takes up to `size` queued datagrams in one recvmmsg and sends the
replies in one sendmmsg. It only batches what is already queued (MSG_DONTWAIT), so a lone query
is answered as soon as it arrives, and batches grow only when queries come faster than they are
answered, which is when the saved calls matter.

The message headers, address slots and buffers are allocated once. The hot path touches them
through memoryviews with `struct.pack_into`/`unpack_from` at offsets taken from the ctypes
layout, and copies each reply into its slot's send buffer; ctypes is only the call itself.
A datagram longer than `RECV_BYTES` arrives truncated (MSG_TRUNC) and is dropped, as a query
that large is not DNS; a reply longer than `SEND_BYTES` is sent on its own with `sendto`.

`available()` says whether this works here (Linux with a C library that has both calls); the
DNS server falls back to one `recvfrom` per datagram otherwise.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("agent.dns")

RECV_BYTES = 4096  # a query's bytes (EDNS0 queries are a few hundred bytes at most)
SEND_BYTES = 4096  # a reply's bytes sent in the batch; longer ones go alone
NAME_BYTES = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32), ("msg_iov", ctypes.c_void_p),
                ("msg_iovlen", ctypes.c_size_t), ("msg_control", ctypes.c_void_p),
                ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


MSG = ctypes.sizeof(_MMsgHdr)
IOV = ctypes.sizeof(_IOVec)
NAME_AT = _MsgHdr.msg_name.offset
FLAGS_AT = _MsgHdr.msg_flags.offset
LEN_AT = _MMsgHdr.msg_len.offset
IOV_LEN_AT = _IOVec.iov_len.offset
_FLAGS_LEN = struct.Struct(f"@i{LEN_AT - FLAGS_AT - 4}xI")  # msg_flags ... msg_len
_NAME = struct.Struct("@PI")  # msg_name, msg_namelen
_SIZE = struct.Struct("@N")
_NAME_LEN = {socket.AF_INET: 16, socket.AF_INET6: 28}  # sizeof(sockaddr_in), sizeof(sockaddr_in6)

_libc: ctypes.CDLL | None = None


def available() -> bool:
    """True when recvmmsg and sendmmsg can be called (Linux, a C library with both)."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _ = libc.recvmmsg, libc.sendmmsg
        except (OSError, AttributeError):
            return False
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        _libc = libc
    return _libc is not None


def _headers(size: int, buf: ctypes.Array[ctypes.c_char], each: int,
             names: ctypes.Array[ctypes.c_char]) -> tuple[ctypes.Array[_MMsgHdr], ctypes.Array[_IOVec]]:
    """`size` message headers, message i reading or writing `buf[i * each:]` from or to `names[i]`."""
    msgs = (_MMsgHdr * size)()
    iovs = (_IOVec * size)()
    base, name_base = ctypes.addressof(buf), ctypes.addressof(names)
    for i in range(size):
        iovs[i].iov_base = base + i * each
        iovs[i].iov_len = each
        hdr = msgs[i].msg_hdr
        hdr.msg_iov = ctypes.addressof(iovs[i])
        hdr.msg_iovlen = 1
        hdr.msg_name = name_base + i * NAME_BYTES
        hdr.msg_namelen = NAME_BYTES
    return msgs, iovs


class Batch:
    """Receive up to `size` datagrams of one socket at a time and send their replies together."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        assert _libc is not None, "available() first"
        self.sock = sock
        self.fd = sock.fileno()
        self.size = size
        self.family = sock.family
        self.recv_buf = ctypes.create_string_buffer(size * RECV_BYTES)
        self.send_buf = ctypes.create_string_buffer(size * SEND_BYTES)
        self.names = ctypes.create_string_buffer(size * NAME_BYTES)
        self.recv_msgs, self.recv_iovs = _headers(size, self.recv_buf, RECV_BYTES, self.names)
        self.send_msgs, self.send_iovs = _headers(size, self.send_buf, SEND_BYTES, self.names)
        self.recv_view = memoryview(self.recv_msgs).cast("B")
        self.send_view = memoryview(self.send_msgs).cast("B")
        self.send_iov_view = memoryview(self.send_iovs).cast("B")
        self.recv_data = memoryview(self.recv_buf).cast("B")
        self.send_data = memoryview(self.send_buf).cast("B")
        self.name_view = memoryview(self.names).cast("B")
        self.name_addrs = [ctypes.addressof(self.names) + i * NAME_BYTES for i in range(size)]
        self.name_len = _NAME_LEN.get(sock.family, NAME_BYTES)  # the kernel writes this much of an asker's address
        self.recv_fresh = memoryview(bytes(self.recv_view))  # the receive headers as set up, to reset them
        self.received = 0
        self.queued = 0

    def receive(self) -> int:
        """Read what is queued (at most `size` datagrams); their count (0: none, or an error)."""
        used = self.received * MSG  # the kernel wrote each used slot's address and datagram lengths
        self.recv_view[:used] = self.recv_fresh[:used]
        assert _libc is not None
        n = _libc.recvmmsg(self.fd, ctypes.addressof(self.recv_msgs), self.size, MSG_DONTWAIT, None)
        self.received = max(n, 0)
        self.queued = 0
        return self.received

    def datagram(self, i: int, skip: int = 0) -> bytes | None:
        """The i-th datagram of the last `receive`, less its first `skip` bytes (2: a DNS query's
        cache key, after its ID); None: truncated, too long to be a query."""
        flags, length = _FLAGS_LEN.unpack_from(self.recv_view, i * MSG + FLAGS_AT)
        if flags & MSG_TRUNC:
            return None
        start = i * RECV_BYTES
        return bytes(self.recv_data[start + skip:start + length])

    def address(self, i: int) -> tuple[str, int]:
        """The sender of the i-th datagram, as `recvfrom` gives it (host, port)."""
        at = i * NAME_BYTES
        raw = bytes(self.name_view[at:at + NAME_BYTES])
        port = int.from_bytes(raw[2:4], "big")
        if self.family == socket.AF_INET6:
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port

    def reply(self, i: int, data: bytes) -> None:
        """Queue `data` for the sender of the i-th datagram (sent by `flush`)."""
        length = len(data)
        if length > SEND_BYTES:
            self.sock.sendto(data, self.address(i))
            return
        start = self.queued * SEND_BYTES
        self.send_data[start:start + length] = data
        self._queue(i, length)

    def reply_with_id(self, i: int, rest: bytes) -> None:
        """Queue the i-th datagram's own first two bytes (a DNS query's ID), then `rest`."""
        length = 2 + len(rest)
        at = i * RECV_BYTES
        if length > SEND_BYTES:
            self.sock.sendto(bytes(self.recv_data[at:at + 2]) + rest, self.address(i))
            return
        j = self.queued
        start = j * SEND_BYTES
        data = self.send_data
        data[start:start + 2] = self.recv_data[at:at + 2]
        data[start + 2:start + length] = rest
        _SIZE.pack_into(self.send_iov_view, j * IOV + IOV_LEN_AT, length)  # _queue, inline: the hot path
        _NAME.pack_into(self.send_view, j * MSG + NAME_AT, self.name_addrs[i], self.name_len)
        self.queued = j + 1

    def _queue(self, i: int, length: int) -> None:
        j = self.queued
        _SIZE.pack_into(self.send_iov_view, j * IOV + IOV_LEN_AT, length)
        _NAME.pack_into(self.send_view, j * MSG + NAME_AT, self.name_addrs[i], self.name_len)
        self.queued = j + 1

    def flush(self) -> None:
        """Send the queued replies. A reply the kernel will not take now (a full send buffer) is
        dropped, as a lost UDP reply is: the client retries."""
        assert _libc is not None
        sent, queued, base = 0, self.queued, ctypes.addressof(self.send_msgs)
        while sent < queued:
            n = _libc.sendmmsg(self.fd, base + sent * MSG, queued - sent, 0)
            if n <= 0:
                if ctypes.get_errno() == 4:  # EINTR
                    continue
                sent += 1  # this reply cannot go (EAGAIN, an unreachable asker): skip it
            else:
                sent += n
        self.queued = 0


def reader(sock: socket.socket, size: int, server: Any,
           other: Callable[[Any, bytes, tuple[str, int]], None]) -> Callable[[], None] | None:
    """A read callback for the event loop that answers every queued datagram in batches, or None
    where batching is not available. A query the DNS server's answer cache holds is answered by
    `server.hit(key)` (the reply without its ID; the hits are reported once per batch with
    `server.hits_done(seconds)`); any other by `server.answer(data, False)` (looked up per
    batch: telemetry wraps it): reply bytes are sent in the batch, any other result but None goes
    to `other(result, data, asker)`."""
    if not available() or os.environ.get("CAIRN_DNS_NO_MMSG"):
        return None
    batch = Batch(sock, size)
    clock = time.perf_counter
    headers, contents, flags_len = batch.recv_view, batch.recv_data, _FLAGS_LEN.unpack_from

    def ready() -> None:
        answer, hit, reply_with_id = server.answer, server.hit, batch.reply_with_id
        start = clock()
        slow = 0.0  # seconds spent on queries that were not hits
        for i in range(batch.receive()):
            flags, length = flags_len(headers, i * MSG + FLAGS_AT)  # batch.datagram(i, 2), inline
            if flags & MSG_TRUNC:
                continue
            at = i * RECV_BYTES
            began = 0.0
            try:
                rest = hit(bytes(contents[at + 2:at + length]))
                if rest is not None:
                    reply_with_id(i, rest)
                    continue
                began = clock()
                data = batch.datagram(i)
                if data is None:
                    continue
                out = answer(data, False)
                if out.__class__ is bytes:
                    batch.reply(i, out)
                elif out is not None:
                    other(out, data, batch.address(i))
            except OSError:
                pass  # a reply too long for the batch could not be sent: the client retries
            except Exception as err:  # noqa: BLE001 - never let one packet stop the listener
                log.error("DNS query failed: error=%r", err)
            if began:
                slow += clock() - began
        batch.flush()
        server.hits_done(clock() - start - slow)

    return ready
