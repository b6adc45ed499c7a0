"""Hostile DNS packets into the request path: only declared outcomes, never an exception.

The declared outcomes (DESIGN: bad input never kills the agent; reference/consul-api.md §6.5):
a drop (nothing sent), a request to forward to the recursors, or a reply that echoes the query ID,
has QR set, fits the transport, and carries one of NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED or
BADVERS. SERVFAIL would mean an internal error and fails the test. A drop is declared only for a
packet shorter than a header or a response (QR set): every other packet is answered (docs/dns.md,
"Malformed packets"), with FORMERR when it cannot be read. Inputs: random bytes, valid
queries mutated (bit flips, cuts, insertions, splices), and structured headers with random
counts, compression pointers (loops included), EDNS options and classes/types. Both the sans-IO
`Answerer` and the server's cached path are driven.
"""

from __future__ import annotations

import random
import struct

from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord, EDNSOption
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.config.runtime import RuntimeConfig
from appliance.dns.answers import Answerer, Settings
from appliance.dns.server import DNSServer
from appliance.state.fsm import FSM
from appliance.state.store import Store

ALLOWED_RCODES = {0, 1, 3, 4, 5, 16}


def _store() -> Store:
    store = Store()
    fsm = FSM(store)
    for i in range(4):
        fsm.apply(2 * i + 1, {"Type": "register", "Node": f"n{i}", "Address": f"10.0.0.{i + 1}", "Datacenter": "dc1",
                              "TaggedAddresses": {}, "NodeMeta": {"k": "v" * (i * 60)}, "Checks": []})
        fsm.apply(2 * i + 2, {"Type": "register", "Node": f"n{i}", "SkipNodeUpdate": True, "Checks": [],
                              "Service": {"ID": f"web{i}", "Service": "web", "Tags": ["t"], "Address": "",
                                          "Port": 80 + i, "Meta": {}, "Weights": {"Passing": 1, "Warning": 1},
                                          "EnableTagOverride": False, "Proxy": {}, "Connect": {}, "PeerName": ""}})
    return store


STORE = _store()
ANSWERERS = [
    Answerer(Settings()),
    Answerer(Settings(recursors=True, enable_truncate=True, udp_answer_limit=1, alt_domain="alt.example.")),
    Answerer(Settings(disable_compression=True, only_passing=True, a_record_limit=2)),
]
SERVER = DNSServer(STORE, RuntimeConfig(recursors=("192.0.2.1",)), rng=random.Random(0))

NAMES = ["web.service.consul", "t.web.service.consul", "_web._tcp.service.consul", "_web._tcp.consul",
         "n1.node.consul", "n1.node.dc1.consul", "0a000001.addr.dc1.consul", "consul", "1.0.0.10.in-addr.arpa",
         "example.com", "web.service.alt.example", "x.consul", "web.service.dc2.consul", "a" * 63 + ".consul"]
TYPES = ["A", "AAAA", "SRV", "TXT", "ANY", "SOA", "NS", "PTR", "MX", "AXFR", "IXFR", "CNAME", "CAA", "OPT"]


def seeds() -> st.SearchStrategy[bytes]:
    @st.composite
    def one(draw):
        header = DNSHeader(id=draw(st.integers(0, 0xFFFF)), rd=int(draw(st.booleans())))
        qtype = getattr(QTYPE, draw(st.sampled_from(TYPES)))
        q = DNSRecord(header, q=DNSQuestion(draw(st.sampled_from(NAMES)), qtype))
        if draw(st.booleans()):
            opts = [EDNSOption(8, draw(st.binary(max_size=12)))] if draw(st.booleans()) else []
            q.add_ar(EDNS0(udp_len=draw(st.integers(0, 0xFFFF)), version=draw(st.sampled_from([0, 0, 1])),
                           opts=opts))
        return bytes(q.pack())

    return one()


@st.composite
def mutated(draw):
    data = bytearray(draw(seeds()))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif op == 2:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3 and data:
            data[pos] = draw(st.integers(0, 255))
        else:
            data += draw(seeds())
    return bytes(data)


@st.composite
def structured(draw):
    """A header with random counts and flags, then a question with pointers and odd labels."""
    flags = draw(st.integers(0, 0xFFFF)) & ~0x8000 if draw(st.booleans()) else draw(st.integers(0, 0xFFFF))
    counts = [draw(st.integers(0, 3)) for _ in range(4)]
    body = b""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            body += bytes([draw(st.integers(0, 70))]) + draw(st.binary(max_size=70))
        elif kind == 1:
            body += struct.pack("!H", 0xC000 | draw(st.integers(0, 40)))  # pointers, self-loops included
        elif kind == 2:
            body += b"\x00" + struct.pack("!HH", draw(st.integers(0, 300)), draw(st.integers(0, 300)))
        else:
            body += b"\x00\x00\x29" + struct.pack("!HIH", draw(st.integers(0, 0xFFFF)), 0, 0)
    return struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), flags, *counts) + body


PACKETS = st.one_of(st.binary(max_size=600), mutated(), structured(), seeds())


def answerable(data: bytes) -> bool:
    """A readable query header: the packet must be answered, never dropped."""
    return len(data) >= 12 and not data[2] & 0x80


def check_outcome(data: bytes, wire: bytes | None, *, tcp: bool) -> None:
    if wire is None:
        return
    assert answerable(data), f"a reply to a packet that must be dropped: {data!r}"
    assert len(wire) >= 12
    assert wire[:2] == data[:2], "reply must carry the query ID"
    assert wire[2] & 0x80, "QR must be set"
    assert len(wire) <= (65535 if tcp else 65507)
    rcode = wire[3] & 0x0F
    try:
        rec = DNSRecord.parse(wire)
    except Exception:  # noqa: BLE001 - dnslib raises many types on what it cannot decode
        # only a question with labels dnslib will not decode (non-UTF-8 bytes) is excused
        assert not _utf8_question(data), f"unparseable reply {wire!r} to {data!r}"
        assert rcode in ALLOWED_RCODES
        return
    full = rcode
    for rr in rec.ar:
        if rr.rtype == 41:
            full |= (rr.ttl >> 24) << 4
    assert full in ALLOWED_RCODES, f"rcode {full} for {data!r}"


def _utf8_question(data: bytes) -> bool:
    pos = 12
    try:
        while data[pos]:
            n = data[pos]
            data[pos + 1 : pos + 1 + n].decode()
            pos += n + 1
    except (IndexError, UnicodeDecodeError):
        return False
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PACKETS, st.integers(0, 2), st.booleans())
def test_answerer_has_only_declared_outcomes(data, which, tcp):
    reply = ANSWERERS[which].respond(data, STORE, random.Random(1), 1.7e9, tcp=tcp)
    assert not reply.error, reply.error
    if reply.wire is None:
        assert reply.forward is None or ANSWERERS[which].s.recursors
        assert not answerable(data) or reply.forward is not None or reply.remote is not None, (
            f"a query with a readable header was dropped: {data!r}")
        return
    check_outcome(data, reply.wire, tcp=tcp)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PACKETS, st.booleans())
def test_server_request_path_has_only_declared_outcomes(data, tcp):
    # twice: the second answer may come from the wire cache, with the ID patched in
    for _ in range(2):
        out = SERVER.answer(data, tcp)
        if out is None or out.__class__ is not bytes:
            assert out is None or out.forward is not None or out.remote is not None
            assert out is not None or not answerable(data), f"a query with a readable header was dropped: {data!r}"
            continue
        check_outcome(data, out, tcp=tcp)
    assert SERVER.stats["servfail"] == 0


@st.composite
def question_names(draw):
    """A question name as label lengths and compression pointers, some past RFC 1035's limits."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:
            parts.append(("ptr", draw(st.integers(0, 0x3FFF))))
        else:
            parts.append(("label", draw(st.sampled_from([1, 3, 40, 62, 63, 63, 64, 65, 100, 191]))))
    return parts, draw(st.booleans()), draw(st.integers(0, 0xFFFF))


@settings(max_examples=600, deadline=None)
@given(question_names(), st.booleans())
def test_question_names_are_read_or_formerr_by_rfc1035(drawn, tcp):
    # RFC 1035 §2.3.4 and §4.1.4: labels of at most 63 octets, names of at most 255; the only
    # question of a query has nothing before it a pointer could name, so a pointer is FORMERR
    parts, terminated, qid = drawn
    name = b""
    for kind, value in parts:
        name += struct.pack("!H", 0xC000 | value) if kind == "ptr" else bytes([value]) + b"x" * min(value, 63)
    name += b"\x00" if terminated else b""
    data = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    reply = ANSWERERS[0].respond(data, STORE, random.Random(1), 1.7e9, tcp=tcp)
    assert reply.wire is not None and not reply.error
    assert reply.wire[:2] == data[:2] and reply.wire[2] & 0x80
    labels = []
    for kind, value in parts:
        if kind == "ptr" or value > 63:
            break
        labels.append(value)
    valid = len(labels) == len(parts) and terminated and 1 + sum(n + 1 for n in labels) <= 255
    if not valid:
        assert reply.rcode == 1 and reply.wire[3] & 0x0F == 1, (parts, terminated)
        assert reply.wire[4:6] == b"\x00\x00"  # no question to echo
    else:
        assert reply.rcode != 1


def test_udp_replies_respect_the_client_size():
    for size in (0, 512, 600, 1232, 4096):
        q = DNSRecord.question("web.service.consul", "SRV")
        q.add_ar(EDNS0(udp_len=size))
        reply = ANSWERERS[0].respond(bytes(q.pack()), STORE, random.Random(2), 1.7e9)
        assert len(reply.wire) <= max(512, size)
