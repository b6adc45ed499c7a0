"""Packing DNS replies: header flags, EDNS0, compression, and trimming to the size the client takes.

How it works
------------
A reply is built as answer *groups*: one answer record with the additional records that belong
to it (an SRV record with its target's A record and node meta TXT), so that dropping an answer
drops its additional records too. `pack_reply` packs the header, the echoed question, the answers,
the authority and the deduplicated additional records with dnslib's encoders (name compression
on unless `disable_compression`), then makes the message fit:

* UDP without EDNS (a 512-byte limit): at most min(8, `udp_answer_limit`) answers;
* the limit is 512 bytes, the EDNS0 UDP size the client advertised (at most 65507), or 65523 on
  TCP; over it, the authority section goes first, then answers from the end (many at a time when
  far over, one at a time when close), then the additional records;
* answers dropped on UDP set the TC bit when `enable_truncate` is on (Consul's rule), and always
  when not even one answer fits.

A client that sent an OPT record gets one back with the same UDP size, and its Client Subnet
option echoed with scope prefix 0. `error_reply` packs header-only (or header + question) replies
for FORMERR, NOTIMP, REFUSED, SERVFAIL and BADVERS. Sans-IO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dnslib import AAAA, SRV, A, DNSLabel, DNSQuestion
from dnslib.label import DNSBuffer

from appliance.dns.names import OPT_ECS, T_OPT, Request

UDP_PLAIN_MAX = 512
UDP_EDNS_MAX = 65535 - 20 - 8
TCP_MAX = 65523
MAX_UDP_ANSWER_LIMIT = 8
TC_BIT = 0x02  # in the third byte of the header


class Rec:
    """One resource record: a name, type, TTL and a dnslib rdata object that packs itself.

    Lighter than dnslib's RR (no range checks on every field), packed with dnslib's buffer and
    name compression all the same.
    """

    __slots__ = ("rname", "rtype", "ttl", "rdata")

    def __init__(self, rname: Any, rtype: int, ttl: int, rdata: Any) -> None:
        self.rname = rname if isinstance(rname, DNSLabel) else label(rname)
        self.rtype = rtype
        self.ttl = ttl
        self.rdata = rdata

    def pack(self, buf: DNSBuffer) -> None:
        buf.encode_name(self.rname)
        at = buf.offset
        buf.append(_RR_FIXED.pack(self.rtype, 1, self.ttl, 0))
        self.rdata.pack(buf)
        buf.update(at + 8, "!H", buf.offset - at - 10)


_RR_FIXED = struct.Struct("!HHIH")


@lru_cache(maxsize=4096)
def label(name: str) -> DNSLabel:
    return DNSLabel(name)


@lru_cache(maxsize=8192)
def rd_a(ip: str) -> A:
    return A(ip)


@lru_cache(maxsize=8192)
def rd_aaaa(ip: str) -> AAAA:
    return AAAA(ip)


@lru_cache(maxsize=8192)
def rd_srv(weight: int, port: int, target: str) -> SRV:
    return SRV(1, weight, port, label(target))


@dataclass(slots=True)
class Extra:
    """An additional (or glue) record with a key for deduplication."""

    key: tuple[Any, ...]
    rr: Rec


@dataclass(slots=True)
class Group:
    rr: Rec
    extras: list[Extra] = field(default_factory=list)


class _NoNames(dict):  # type: ignore[type-arg]
    """A name table that never remembers a name: dnslib then writes every name in full."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


class _Names(dict):  # type: ignore[type-arg]
    """dnslib's compression table, minus names past offset 0x3FFF (a pointer has 14 bits)."""

    def __setitem__(self, key: Any, value: int) -> None:
        if value < 0x4000:
            dict.__setitem__(self, key, value)


def _flags(req: Request, rcode: int, *, aa: bool, ra: bool) -> int:
    return 0x8000 | (req.flags & 0x7900) | (0x0400 if aa else 0) | (0x0080 if ra else 0) | (rcode & 0xF)


def _opt(req: Request, rcode: int) -> bytes:
    """The OPT record of the reply: same UDP size, extended rcode, the ECS option echoed."""
    if not req.edns:
        return b""
    options = b""
    if req.ecs is not None and len(req.ecs) >= 4:
        ecs = bytearray(req.ecs)
        ecs[3] = 0  # scope prefix 0: the answer holds for every client subnet
        options = struct.pack("!HH", OPT_ECS, len(ecs)) + bytes(ecs)
    size = min(req.udp_size, UDP_EDNS_MAX)
    return b"\x00" + _RR_FIXED.pack(T_OPT, size, (rcode >> 4) << 24, len(options)) + options


def _question(req: Request) -> DNSQuestion:
    return DNSQuestion(DNSLabel(req.labels), req.qtype, req.qclass)


def _pack(req: Request, flags: int, question: DNSQuestion | None, answers: list[Rec], authority: list[Rec],
          additional: list[Rec], opt: bytes, compress: bool, names: type[dict] = dict) -> bytes:  # type: ignore[type-arg]
    buf = DNSBuffer()
    buf.names = names() if compress else _NoNames()
    counts = (1 if question is not None else 0, len(answers), len(authority), len(additional) + bool(opt))
    buf.append(struct.pack("!HHHHHH", req.id, flags, *counts))
    if question is not None:
        question.pack(buf)
    for section in (answers, authority, additional):
        for rr in section:
            rr.pack(buf)
    if opt:
        buf.append(opt)
    if compress and names is dict and buf.offset > 0x4000:
        # past 16 KiB a plain table may hold offsets a 14-bit pointer cannot reach
        return _pack(req, flags, question, answers, authority, additional, opt, compress, _Names)
    return bytes(buf.data)


def error_reply(req: Request | None, rcode: int, ra: bool) -> bytes | None:
    """A reply with no records: the question is echoed when it was read."""
    if req is None:
        return None
    flags = _flags(req, rcode, aa=False, ra=ra)
    if not (req.qtype or req.labels or req.edns):
        # the header alone (a malformed question): packed directly, the cheapest reply to junk
        return struct.pack("!HHHHHH", req.id, flags, 0, 0, 0, 0)
    question = _question(req) if req.qtype or req.labels else None
    try:
        return _pack(req, flags, question, [], [], [], _opt(req, rcode), True)
    except Exception:  # noqa: BLE001 - a name dnslib will not encode: answer with the header alone
        return struct.pack("!HHHHHH", req.id, flags, 0, 0, 0, 0)


def _extras(groups: list[Group], additional: list[Extra]) -> list[Rec]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for extra in [e for g in groups for e in g.extras] + additional:
        if extra.key not in seen:
            seen.add(extra.key)
            out.append(extra.rr)
    return out


def max_size(req: Request, tcp: bool) -> int:
    if tcp:
        return TCP_MAX
    if req.edns and req.udp_size > UDP_PLAIN_MAX:
        return min(req.udp_size, UDP_EDNS_MAX)
    return UDP_PLAIN_MAX


def pack_reply(req: Request, rcode: int, groups: list[Group], authority: list[Rec], additional: list[Extra],
               *, tcp: bool, settings: Any) -> bytes:
    """Pack an authoritative reply, trimmed to fit (see the module docstring)."""
    flags = _flags(req, rcode, aa=True, ra=settings.recursors)
    question = _question(req)
    opt = _opt(req, rcode)
    compress = not settings.disable_compression
    limit = max_size(req, tcp)
    total = len(groups)
    if not tcp and limit == UDP_PLAIN_MAX:
        cap = min(MAX_UDP_ANSWER_LIMIT, settings.udp_answer_limit)
        if total > cap:
            groups = groups[:cap]

    def build(groups: list[Group], authority: list[Rec], with_extras: bool = True) -> bytes:
        extras = _extras(groups, additional) if with_extras else []
        return _pack(req, flags, question, [g.rr for g in groups], authority, extras, opt, compress)

    data = build(groups, authority)
    if len(data) > limit:
        authority = []
        data = build(groups, authority)
        while len(data) > limit and len(groups) > 1:
            keep = len(groups) - 1
            if len(data) - limit > 100 and len(groups) > 2:
                keep = max(1, min(keep, len(groups) * limit // len(data)))
            groups = groups[:keep]
            data = build(groups, authority)
        if len(data) > limit:
            data = build(groups, authority, with_extras=False)
        if len(data) > limit:
            groups = []
            data = build(groups, authority, with_extras=False)
    if len(groups) < total and not tcp and (settings.enable_truncate or not groups):
        data = data[:2] + bytes([data[2] | TC_BIT]) + data[3:]
    return data
