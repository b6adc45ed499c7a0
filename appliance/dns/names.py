"""DNS questions: the request on the wire, and what a name under the domain asks for.

How it works
------------
`parse_request(data)` reads one query packet by hand: the 12-byte header, exactly one question
and the additional section (at most two records; only an EDNS0 OPT record is kept: its UDP size,
version and a Client Subnet option). It never follows a compression pointer (a question name may
not use one, and names in the additional section are skipped, not decoded), so a pointer loop
cannot make it spin, and its work is bounded by the packet's length. Whatever it cannot accept it
reports as `BadRequest(rcode)`, the rule miekg/dns's server (Consul's) follows:

* rcode None, "drop silently": fewer than 12 bytes (no ID to answer with), or QR set (a response;
  answering it could start a loop between two servers);
* NOTIMP: an opcode other than QUERY;
* FORMERR: anything else that cannot be read: not exactly one question, records in the answer or
  authority section, more than two additional records, a label longer than 63 octets (or an
  extended label type), a name longer than 255 octets, a compression pointer in the question, a
  question or record cut short, a second OPT record or malformed EDNS options;
* BADVERS: an EDNS version other than 0.

Every BadRequest with an rcode carries `request`: the question when it was read (so the reply
echoes it), else the header alone (ID and flags), so the reply always has the query's ID.

`NameParser.parse(labels, qtype)` turns the lowercased labels of a question into a `Lookup`:

    <node>.node[.<dc>].<domain>                        kind "node"
    [<tag>.]<service>.service[.<dc>].<domain>          kind "service"
    _<service>._<tag|tcp>[.service][.<dc>].<domain>    kind "service" (RFC 2782; SRV for the short form)
    <8 or 32 hex digits>.addr[.<dc>].<domain>          kind "addr"
    <reversed ip>.in-addr.arpa / <nibbles>.ip6.arpa    kind "ptr"
    <domain>                                           kind "apex"
    anything else under the domain                     kind "nxdomain"
    not under the domain                               kind "outside"

The kind label is the right-most of service/connect/virtual/ingress/node/query/addr; what is left
of it are the query parts, what is right of it the locality: nothing, `<dc>`, or `<value>.<type>`
pairs (`dc`, `peer`, `ns`, `ap`). A node or service lookup naming another datacenter carries its
name in `Lookup.dc` (the DNS server asks that datacenter, appliance/federation/forward.py), and so
does a prepared query (`<query>.query[.<dc>].<domain>`, run where it is defined); other kinds
naming another datacenter are NXDOMAIN. Both `domain` and `alt_domain` are accepted; the
lookup says which one the question used so that answer names use it too. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from functools import lru_cache

# rcodes and types used across the package
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_TXT, T_AAAA, T_SRV, T_OPT = 1, 2, 5, 6, 12, 16, 28, 33, 41
T_IXFR, T_AXFR, T_MAILB, T_MAILA, T_ANY = 251, 252, 253, 254, 255
C_IN, C_ANY = 1, 255
OPT_ECS = 8  # EDNS Client Subnet (RFC 7871)

MAX_NAME_LEN = 255  # octets on the wire, length bytes and the root included (RFC 1035 §3.1)
MAX_LABEL_LEN = 63  # a length byte of 64-191 is an extended or reserved label type: FORMERR
MAX_ADDITIONAL = 2  # OPT and TSIG at most, as miekg/dns's DefaultMsgAcceptFunc allows
KINDS = ("service", "connect", "virtual", "ingress", "node", "query", "addr")
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class BadRequest(Exception):
    """A packet that cannot be answered normally: rcode None = drop it, else answer with rcode."""

    def __init__(self, rcode: int | None, why: str, *, request: Request | None = None) -> None:
        super().__init__(why)
        self.rcode = rcode
        self.request = request


@dataclass(slots=True)
class Request:
    id: int
    flags: int
    labels: list[bytes]  # question name as sent (case kept, for the echo and owner names)
    qtype: int
    qclass: int
    edns: bool = False
    udp_size: int = 512
    edns_version: int = 0
    ecs: bytes | None = None  # Client Subnet option data, echoed with scope 0
    qname: bytes = b""  # the question name as on the wire (length octets and labels, the root octet)

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def _read_labels(data: bytes, offset: int) -> tuple[list[bytes], int]:
    """Labels of an uncompressed name at offset; FORMERR on pointers, bad lengths, overruns."""
    labels: list[bytes] = []
    total = 1
    n = len(data)
    while True:
        if offset >= n:
            raise BadRequest(FORMERR, "name runs past the end")
        length = data[offset]
        offset += 1
        if length == 0:
            return labels, offset
        if length > MAX_LABEL_LEN:
            # 0xC0-0xFF: a compression pointer, which the only question of a query has nothing
            # before it to point at (so it can only be a loop or point into the header);
            # 64-191: longer than a label may be, or an extended label type (RFC 6891 §5)
            why = "compression pointer" if length >= 0xC0 else "label longer than 63 octets"
            raise BadRequest(FORMERR, why + " in the question")
        total += length + 1
        if total > MAX_NAME_LEN or offset + length > n:
            raise BadRequest(FORMERR, "name too long or truncated")
        labels.append(data[offset : offset + length])
        offset += length


def _skip_name(data: bytes, offset: int) -> tuple[bool, int]:
    """Skip a possibly compressed name (pointers are not followed); (is_root, next offset)."""
    first = offset
    n = len(data)
    while True:
        if offset >= n:
            raise BadRequest(FORMERR, "record name runs past the end")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 2 > n:
                raise BadRequest(FORMERR, "truncated pointer")
            return False, offset + 2
        if length & 0xC0:
            raise BadRequest(FORMERR, "extended label type")
        offset += 1 + length
        if length == 0:
            return offset == first + 1, offset
        if offset - first > MAX_NAME_LEN:
            raise BadRequest(FORMERR, "record name too long")


def header_request(data: bytes) -> Request | None:
    """The bare request a header alone gives (ID and flags, no question), to answer an error with;
    None when there is no header to answer (shorter than 12 bytes) or it is a response."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    return Request(qid, flags, [], 0, 0)


def parse_request(data: bytes) -> Request:
    """The one question of a query packet, and its EDNS0 options (see the module docstring).

    Raises BadRequest: rcode None for a packet with no header to answer (fewer than 12 bytes) or a
    response (QR set); otherwise the rcode to answer with, and `request` set to what was read, so
    that every packet with a readable query header gets an answer. Work is bounded by the packet:
    the question name is read once (no pointer is followed), at most MAX_ADDITIONAL records are
    skipped, and every loop advances through the bytes."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < 12:
        raise BadRequest(None, "shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise BadRequest(None, "a response, not a query")
    req = None
    try:
        if (flags >> 11) & 0xF != 0:
            raise BadRequest(NOTIMP, "opcode is not QUERY")
        if qdcount != 1:
            raise BadRequest(FORMERR, f"{qdcount} questions")
        if ancount or nscount:
            raise BadRequest(FORMERR, "records in the answer or authority section of a query")
        if arcount > MAX_ADDITIONAL:
            raise BadRequest(FORMERR, f"{arcount} additional records")
        labels, offset = _read_labels(data, 12)
        if offset + 4 > len(data):
            raise BadRequest(FORMERR, "question truncated")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        req = Request(qid, flags, labels, qtype, qclass, qname=data[12:offset - 4])
        for _ in range(arcount):
            is_root, offset = _skip_name(data, offset)
            if offset + 10 > len(data):
                raise BadRequest(FORMERR, "additional record truncated")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, offset)
            offset += 10
            if offset + rdlen > len(data):
                raise BadRequest(FORMERR, "rdata runs past the end")
            if rtype == T_OPT:
                if req.edns or not is_root:
                    raise BadRequest(FORMERR, "second OPT record or OPT not at the root")
                req.edns = True
                req.udp_size = max(512, rclass)
                req.edns_version = (ttl >> 16) & 0xFF
                req.ecs = _find_option(data[offset : offset + rdlen], OPT_ECS)
            offset += rdlen
    except BadRequest as err:
        # the question when it was read (echoed in the reply), else the header alone
        err.request = req if req is not None else Request(qid, flags, [], 0, 0)
        raise
    if req.edns and req.edns_version != 0:
        raise BadRequest(BADVERS, f"EDNS version {req.edns_version}", request=req)
    return req


def _find_option(rdata: bytes, wanted: int) -> bytes | None:
    found = None
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise BadRequest(FORMERR, "EDNS option truncated")
        code, length = struct.unpack_from("!HH", rdata, pos)
        pos += 4
        if pos + length > len(rdata):
            raise BadRequest(FORMERR, "EDNS option runs past the record")
        if code == wanted:
            found = rdata[pos : pos + length]
        pos += length
    return found


# ---------------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class Lookup:
    kind: str  # node, service, addr, ptr, apex, nxdomain, outside, query, connect, virtual, ingress
    domain: str = ""  # the domain the question used, with its trailing dot ("consul.")
    name: str = ""  # node name, service name, prepared query name
    tag: str = ""
    ip: str = ""  # addr and ptr lookups
    dc: str = ""  # node and service lookups of another datacenter: its name ("" this one)


def lower_labels(labels: list[bytes]) -> tuple[str, ...]:
    """ASCII-lowercased labels as text; bytes outside ASCII keep their latin-1 character."""
    return tuple(label.lower().decode("latin-1") for label in labels)


def hex_to_ip(label: str) -> str:
    """`0a000005` -> 10.0.0.5, 32 hex digits -> an IPv6 address, anything else -> ""."""
    if len(label) not in (8, 32):
        return ""
    try:
        raw = bytes.fromhex(label)
    except ValueError:
        return ""
    return str(ipaddress.ip_address(raw))


def ip_to_hex(ip: str) -> str:
    return ipaddress.ip_address(ip).packed.hex()


@lru_cache(maxsize=8192)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `text`, or None for a host name (memoized: catalog addresses repeat)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def reverse_ip(labels: tuple[str, ...]) -> str | None:
    """The address a complete reverse name stands for; None for a partial or malformed one."""
    if labels[-2:] == ("in-addr", "arpa"):
        parts = labels[:-2]
        if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
            return None
        return ".".join(reversed(parts))
    if labels[-2:] == ("ip6", "arpa"):
        nibbles = labels[:-2]
        if len(nibbles) != 32 or not all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            return None
        return str(ipaddress.ip_address(bytes.fromhex("".join(reversed(nibbles)))))
    return None


def is_reverse(labels: tuple[str, ...]) -> bool:
    return labels[-2:] in (("in-addr", "arpa"), ("ip6", "arpa"))


def valid_dns_name(name: str) -> bool:
    """Letters, digits and hyphens (dots between labels): what a node needs to be named in DNS."""
    return bool(name) and all(
        label and all(c.isascii() and (c.isalnum() or c == "-") for c in label) for label in name.split(".")
    )


def rfc1464(key: str, value: str) -> str:
    """A node meta pair as a TXT string (RFC 1464): backquote ` and = in the key, and its edge spaces."""
    if key.startswith("rfc1035-"):
        return value
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    key = "` " * (len(key) - len(stripped)) + stripped
    stripped = key.rstrip(" ")
    key = stripped + "` " * (len(key) - len(stripped))
    return key + "=" + value.replace("`", "``")


class NameParser:
    def __init__(self, domain: str, alt_domain: str, datacenter: str) -> None:
        self.datacenter = datacenter.lower()
        self.domains: list[tuple[tuple[str, ...], str]] = []
        for d in (domain, alt_domain):
            d = d.strip().lower().rstrip(".")
            if d:
                self.domains.append((tuple(d.split(".")), d + "."))
        self.domain = self.domains[0][1]

    def match_domain(self, labels: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
        """(labels left of the domain, the domain) for names under one of ours; the longest wins."""
        best = None
        for suffix, text in self.domains:
            n = len(suffix)
            if len(labels) >= n and labels[len(labels) - n :] == suffix and (best is None or n > len(best[0])):
                best = (suffix, text)
        if best is None:
            return None
        return labels[: len(labels) - len(best[0])], best[1]

    def parse(self, labels: tuple[str, ...], qtype: int) -> Lookup:
        matched = self.match_domain(labels)
        if matched is None:
            if is_reverse(labels):
                ip = reverse_ip(labels)
                return Lookup("ptr", self.domain, ip=ip) if ip else Lookup("outside")
            return Lookup("outside")
        rest, domain = matched
        if not rest:
            return Lookup("apex", domain)
        parts: tuple[str, ...] | None = None
        locality: tuple[str, ...] = ()
        kind = ""
        for i in range(len(rest) - 1, -1, -1):
            if rest[i] in KINDS:
                kind, parts, locality = rest[i], rest[:i], rest[i + 1 :]
                break
            if qtype == T_SRV and rest[i].startswith("_"):
                # `_web._tcp.consul`: for SRV a `_` label ends the scan and is a query part
                kind, parts, locality = "service", rest[: i + 1], rest[i + 1 :]
                break
        dc = self._datacenter(locality)
        if not parts or dc is None:
            return Lookup("nxdomain", domain)
        remote = dc if dc != self.datacenter else ""
        if remote and kind not in ("node", "service", "addr", "query"):
            return Lookup("nxdomain", domain)  # only nodes, services and queries are asked of another datacenter
        if kind == "node":
            return Lookup("node", domain, name=".".join(parts), dc=remote)
        if kind == "addr":
            ip = hex_to_ip(parts[0]) if len(parts) == 1 else ""
            return Lookup("addr", domain, ip=ip) if ip else Lookup("nxdomain", domain)
        if kind == "service":
            if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
                tag = parts[1][1:]
                return Lookup("service", domain, name=parts[0][1:], tag="" if tag == "tcp" else tag, dc=remote)
            return Lookup("service", domain, name=parts[-1], tag=".".join(parts[:-1]), dc=remote)
        if kind == "query":
            rfc2782 = len(parts) == 2 and parts[0].startswith("_") and parts[1] == "_tcp"
            return Lookup("query", domain, name=parts[0][1:] if rfc2782 else ".".join(parts), dc=remote)
        return Lookup(kind, domain, name=".".join(parts))

    def _datacenter(self, locality: tuple[str, ...]) -> str | None:
        """The datacenter the locality names (this one when it names none), or None when it is
        not a locality cairn answers (CE: namespace and partition "default", no peers)."""
        if not locality:
            return self.datacenter
        if len(locality) == 1:
            return locality[0]
        if len(locality) % 2 or len(locality) > 6:
            return None
        seen: dict[str, str] = {}
        for value, kind in zip(locality[::2], locality[1::2]):
            if kind not in ("dc", "peer", "ns", "ap") or kind in seen:
                return None
            seen[kind] = value
        if "peer" in seen:
            return None  # no cluster peering: an unknown peer, or dc + peer together
        if not all(seen.get(k, "default") == "default" for k in ("ns", "ap")):
            return None
        return seen.get("dc", self.datacenter)
