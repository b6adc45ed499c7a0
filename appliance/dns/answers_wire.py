"""Packing DNS replies: header flags, EDNS0, compression, and trimming to the size the client takes.

How it works
------------
A reply is built as answer *groups*: one answer record with the additional records that belong
to it (an SRV record with its target's A record and node meta TXT), so that dropping an answer
drops its additional records too. `pack_reply` packs the header, the echoed question, the answers,
the authority and the deduplicated additional records (name compression on unless
`disable_compression`), then makes the message fit:

* UDP without EDNS (a 512-byte limit): at most min(8, `udp_answer_limit`) answers;
* the limit is 512 bytes, the EDNS0 UDP size the client advertised (at most 65507), or 65523 on
  TCP; over it, the authority section goes first, then answers from the end (many at a time when
  far over, one at a time when close), then the additional records;
* answers dropped on UDP set the TC bit when `enable_truncate` is on (Consul's rule), and always
  when not even one answer fits.

A client that sent an OPT record gets one back with the same UDP size, and its Client Subnet
option echoed with scope prefix 0. `error_reply` packs header-only (or header + question) replies
for FORMERR, NOTIMP, REFUSED, SERVFAIL and BADVERS.

The encoder is this module's own, with struct, and writes exactly the bytes dnslib's encoder
wrote before it (tests/unit/test_dns_wire.py holds it to that): a record is its owner's labels
plus, for rdata without names (A, AAAA, TXT), the rest of the record packed once when the record
is built (`Rec.tail`), so packing it is a name and one concatenation; CNAME, NS, PTR and SOA
names are compressed, an SRV target never is (RFC 2782). Compression keeps every suffix written at
an offset a pointer can reach (at most 0x3FFF); past that, names are written in full. The table
is case-sensitive, as dnslib's was, so `WEB.service` and `web.service` share only `service...`.
Text names become labels as dnslib reads them (IDNA, `\\ddd` escapes), so a name it refuses
fails the same way, and a name over 253 octets or a label over 63 fails when packed. An owner
`QNAME` stands for the question's name as the client spelled it; with compression on it is
always a pointer to the question (offset 12). Sans-IO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dnslib import AAAA, A, DNSLabel
from dnslib.label import DNSBuffer, DNSLabelError

from appliance.dns.names import OPT_ECS, T_OPT, Request

UDP_PLAIN_MAX = 512
UDP_EDNS_MAX = 65535 - 20 - 8
TCP_MAX = 65523
MAX_UDP_ANSWER_LIMIT = 8
TC_BIT = 0x02  # in the third byte of the header
MAX_POINTER = 0x3FFF  # a compression pointer has 14 bits of offset

Labels = tuple[bytes, ...]  # a name on the wire: its labels, the root left out
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_SHORT = struct.Struct("!H")


class NoCompress(tuple):  # type: ignore[type-arg]
    """A name in rdata that is written in full and not remembered (SRV targets, RFC 2782)."""

    __slots__ = ()


class _Question(tuple):  # type: ignore[type-arg]
    __slots__ = ()


QNAME: Labels = _Question()  # an owner name that is the question's, as the client spelled it


class Rec:
    """One resource record, ready to pack: owner labels, and either the whole packed rest of the
    record (type, class, TTL, length and rdata: `tail`) or, for rdata with names in it, the
    fixed part and the rdata `parts` (bytes as they are, a `Labels` tuple compressed, a
    `NoCompress` name in full)."""

    __slots__ = ("owner", "rtype", "ttl", "tail", "fixed", "parts")

    def __init__(self, owner: Any, rtype: int, ttl: int, rdata: bytes | tuple[Any, ...]) -> None:
        self.owner: Labels = owner if owner.__class__ is tuple or owner is QNAME else to_labels(owner)
        self.rtype = rtype
        self.ttl = ttl
        self.tail: bytes | None = None
        self.fixed: bytes | None = None
        self.parts: tuple[Any, ...] = ()
        try:
            if rdata.__class__ is bytes:
                self.tail = _RR_FIXED.pack(rtype, 1, ttl, len(rdata)) + rdata
            else:
                self.fixed = _RR_FIXED.pack(rtype, 1, ttl, 0)
                self.parts = rdata  # type: ignore[assignment]
        except struct.error:  # a TTL out of range fails when the record is packed, as it always did
            self.parts = () if rdata.__class__ is bytes else rdata  # type: ignore[assignment]


def to_labels(name: Any) -> Labels:
    if isinstance(name, DNSLabel):
        return name.label  # type: ignore[no-any-return]
    if isinstance(name, (list, tuple)):
        return tuple(name)
    return labels(name)


@lru_cache(maxsize=8192)
def labels(name: str) -> Labels:
    """A name's labels exactly as dnslib reads text (IDNA, `\\ddd` escapes); IDNA errors raise."""
    return DNSLabel(name).label  # type: ignore[no-any-return]


def _rdata(rd: Any) -> bytes:
    buf = DNSBuffer()
    rd.pack(buf)
    return bytes(buf.data)


@lru_cache(maxsize=8192)
def rd_a(ip: str) -> bytes:
    """A rdata for an address text (dnslib reads it, so a text it refuses fails as before)."""
    return _rdata(A(ip))


@lru_cache(maxsize=8192)
def rd_aaaa(ip: str) -> bytes:
    return _rdata(AAAA(ip))


def rd_srv(weight: int, port: int, target: str) -> tuple[Any, ...]:
    """SRV rdata parts: priority 1, weight, port, the target written in full."""
    return (struct.pack("!HHH", 1, weight, port), _nocompress(target))


@lru_cache(maxsize=8192)
def _nocompress(target: str) -> NoCompress:
    return NoCompress(labels(target))


def rd_txt(chunks: list[bytes]) -> bytes:
    """TXT rdata: each string (at most 255 octets) after its length octet."""
    out = bytearray()
    for chunk in chunks:
        if len(chunk) > 255:
            raise DNSLabelError(f"TXT string longer than 255 octets: {len(chunk)}")
        out.append(len(chunk))
        out += chunk
    return bytes(out)


def rd_soa(mname: str, rname: str, times: tuple[int, int, int, int, int]) -> tuple[Any, ...]:
    return (labels(mname), labels(rname), struct.pack("!IIIII", *times))


@dataclass(slots=True)
class Extra:
    """An additional (or glue) record with a key for deduplication."""

    key: tuple[Any, ...]
    rr: Rec


@dataclass(slots=True)
class Group:
    rr: Rec
    extras: list[Extra] = field(default_factory=list)


# ---------------------------------------------------------------------------------- encoding


def _put_name(out: bytearray, names: dict[Labels, bytes] | None, name: Labels) -> None:
    """Write a name, ending in a pointer to an earlier copy of its longest known suffix.

    The table holds every suffix written at an offset a pointer reaches (at most MAX_POINTER);
    `names` None writes the name in full and remembers nothing. Errors as dnslib's encoder:
    a name over 253 octets (dots counted), a label over 63."""
    if names is not None:
        ptr = names.get(name)
        if ptr is not None:
            out += ptr
            return
    if len(name) and sum(map(len, name)) + len(name) - 1 > 253:
        raise DNSLabelError(f"Domain label too long: {name!r}")
    for i in range(len(name)):
        suffix = name[i:] if i else name
        if names is not None:
            if i:
                ptr = names.get(suffix)
                if ptr is not None:
                    out += ptr
                    return
            offset = len(out)
            if offset <= MAX_POINTER:
                names[suffix] = _SHORT.pack(0xC000 | offset)
        element = name[i]
        if len(element) > 63:
            raise DNSLabelError(f"Label component too long: {element!r}")
        out.append(len(element))
        out += element
    out.append(0)


def _put_rec(out: bytearray, names: dict[Labels, bytes] | None, qname: Labels, rr: Rec) -> None:
    owner = rr.owner
    if owner is QNAME:
        owner = qname
    ptr = names.get(owner) if names is not None else None
    if ptr is not None:
        out += ptr
    else:
        _put_name(out, names, owner)
    tail = rr.tail
    if tail is not None:
        out += tail
        return
    fixed = rr.fixed
    if fixed is None:
        fixed = _RR_FIXED.pack(rr.rtype, 1, rr.ttl, 0)  # raises: the TTL is out of range
    at = len(out)
    out += fixed
    for part in rr.parts:
        kind = part.__class__
        if kind is bytes:
            out += part
        else:
            _put_name(out, names if kind is tuple else None, part)
    out[at + 8 : at + 10] = _SHORT.pack(len(out) - at - 10)


@lru_cache(maxsize=4096)
def _question_block(qname: Labels, qtype: int, qclass: int) -> tuple[bytes, dict[Labels, bytes]]:
    """The question as packed at offset 12, and the name table it leaves (copied per reply)."""
    out = bytearray(12)
    names: dict[Labels, bytes] = {}
    _put_name(out, names, qname)
    out += struct.pack("!HH", qtype, qclass)
    return bytes(out[12:]), names


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


def _pack(req: Request, flags: int, question: bool, answers: list[Rec], authority: list[Rec],
          additional: list[Rec], opt: bytes, compress: bool) -> bytes:
    out = bytearray(_HEADER.pack(req.id, flags, 1 if question else 0, len(answers), len(authority),
                                 len(additional) + (1 if opt else 0)))
    names: dict[Labels, bytes] | None = {} if compress else None
    qname = tuple(req.labels)
    if question:
        block, table = _question_block(qname, req.qtype, req.qclass)
        out += block
        if compress:
            names = table.copy()
    for section in (answers, authority, additional):
        for rr in section:
            _put_rec(out, names, qname, rr)
    if opt:
        out += opt
    return bytes(out)


def error_reply(req: Request | None, rcode: int, ra: bool) -> bytes | None:
    """A reply with no records: the question is echoed when it was read."""
    if req is None:
        return None
    flags = _flags(req, rcode, aa=False, ra=ra)
    if not (req.qtype or req.labels or req.edns):
        # the header alone (a malformed question): packed directly, the cheapest reply to junk
        return _HEADER.pack(req.id, flags, 0, 0, 0, 0)
    try:
        return _pack(req, flags, bool(req.qtype or req.labels), [], [], [], _opt(req, rcode), True)
    except Exception:  # noqa: BLE001 - a name that cannot be encoded: answer with the header alone
        return _HEADER.pack(req.id, flags, 0, 0, 0, 0)


def _extras(groups: list[Group], additional: list[Extra]) -> list[Rec]:
    extras = [e for g in groups for e in g.extras] + additional
    if not extras:
        return []
    seen: set[tuple[Any, ...]] = set()
    out = []
    for extra in extras:
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
        return _pack(req, flags, True, [g.rr for g in groups], authority, extras, opt, compress)

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
