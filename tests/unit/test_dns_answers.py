"""DNS names and answers (appliance.dns), from query bytes to reply bytes, with no sockets.

The catalog is built through the FSM, exactly as the agent builds it; replies are decoded with
dnslib. Rules cited from reference/consul-api.md §6 (Consul docs: DNS interface).
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord, EDNSOption

from appliance.cli.dns import dnsmasq_config, resolved_config
from appliance.config.runtime import DNSConfig, RuntimeConfig
from appliance.dns import answers_wire
from appliance.dns.answers import Answerer, Settings
from appliance.dns.names import (
    T_A,
    T_SRV,
    BadRequest,
    NameParser,
    Request,
    header_request,
    hex_to_ip,
    parse_request,
    reverse_ip,
    rfc1464,
)
from appliance.dns.server import DNSServer
from appliance.state.fsm import FSM
from appliance.state.store import Store

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0


# ----------------------------------------------------------------------------- catalog helpers


class Catalog:
    def __init__(self) -> None:
        self.store = Store()
        self.fsm = FSM(self.store)
        self.index = 0

    def apply(self, cmd: dict) -> None:
        self.index += 1
        result = self.fsm.apply(self.index, cmd).result
        assert result is True, result

    def node(self, name: str, address: str, meta: dict | None = None, checks: list | None = None) -> None:
        self.apply({"Type": "register", "Node": name, "Address": address, "Datacenter": "dc1",
                    "TaggedAddresses": {}, "NodeMeta": meta or {}, "Checks": checks or []})

    def service(self, node: str, sid: str, name: str, port: int, *, address: str = "", tags: tuple = (),
                status: str | None = None, weights: dict | None = None) -> None:
        svc = {"ID": sid, "Service": name, "Tags": list(tags), "Address": address, "Port": port, "Meta": {},
               "Weights": weights or {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Proxy": {},
               "Connect": {}, "PeerName": ""}
        checks = [check(node, f"{sid}-check", status, sid)] if status else []
        self.apply({"Type": "register", "Node": node, "SkipNodeUpdate": True, "Service": svc, "Checks": checks})

    def node_check(self, node: str, cid: str, status: str) -> None:
        self.apply({"Type": "register", "Node": node, "SkipNodeUpdate": True, "Checks": [check(node, cid, status)]})


def check(node: str, cid: str, status: str, sid: str = "") -> dict:
    return {"Node": node, "CheckID": cid, "Name": cid, "Status": status, "Notes": "", "Output": "",
            "ServiceID": sid, "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {}}


@pytest.fixture
def cat() -> Catalog:
    c = Catalog()
    c.node("server-1", "10.0.0.1", {"consul-version": "1.17.0", "rfc1035-note": "plain"})
    c.service("server-1", "consul", "consul", 8300)
    c.node("web-a", "10.0.1.1", {"rack": "r1"})
    c.service("web-a", "web-a", "web", 8080, tags=("primary",), status="passing")
    c.node("web-b", "10.0.1.2")
    c.service("web-b", "web-b", "web", 8081, address="10.9.0.2", status="warning")
    c.node("web-c", "10.0.1.3")
    c.service("web-c", "web-c", "web", 8082, status="critical")
    c.node("web-v6", "fd00::7")
    c.service("web-v6", "web-v6", "web6", 9000)
    return c


def ask(store: Store, name: str, qtype: str = "A", *, settings: Settings | None = None, seed: int = 1,
        tcp: bool = False, edns: int | None = None, raw: bytes | None = None) -> DNSRecord:
    reply = answer(store, name, qtype, settings=settings, seed=seed, tcp=tcp, edns=edns, raw=raw)
    assert reply.wire is not None and not reply.error, reply
    return DNSRecord.parse(reply.wire)


def answer(store: Store, name: str, qtype: str = "A", *, settings: Settings | None = None, seed: int = 1,
           tcp: bool = False, edns: int | None = None, raw: bytes | None = None):
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    data = raw if raw is not None else bytes(q.pack())
    return Answerer(settings or Settings()).respond(data, store, random.Random(seed), NOW, tcp=tcp)


def rdatas(rec: DNSRecord, section: str = "rr", rtype: str | None = None) -> list[str]:
    return [str(r.rdata) for r in getattr(rec, section) if rtype is None or QTYPE[r.rtype] == rtype]


# ----------------------------------------------------------------------------- names (§6.2)

P = NameParser("consul.", "cairn.example.", "dc1")


def parse(name: str, qtype: int = T_A):
    return P.parse(tuple(name.lower().rstrip(".").split(".")), qtype)


@pytest.mark.parametrize(
    "name, qtype, kind, target, tag",
    [
        ("web.service.consul", T_A, "service", "web", ""),
        ("primary.web.service.consul", T_A, "service", "web", "primary"),
        ("a.b.web.service.consul", T_A, "service", "web", "a.b"),  # tag = all labels left of the service
        ("_web._tcp.service.consul", T_SRV, "service", "web", ""),  # RFC 2782, _tcp = no tag
        ("_web._primary.service.consul", T_SRV, "service", "web", "primary"),
        ("_web._tcp.consul", T_SRV, "service", "web", ""),  # SRV only: the `_` label ends the scan
        ("_web._tcp.dc1.consul", T_SRV, "service", "web", ""),
        ("web.service.dc1.consul", T_A, "service", "web", ""),
        ("web.service.dc1.dc.consul", T_A, "service", "web", ""),
        ("WEB.Service.CONSUL", T_A, "service", "web", ""),  # case-insensitive
        ("web.service.cairn.example", T_A, "service", "web", ""),  # alt_domain
        ("server-1.node.consul", T_A, "node", "server-1", ""),
        ("host.with.dots.node.dc1.consul", T_A, "node", "host.with.dots", ""),
        ("web.query.consul", T_A, "query", "web", ""),
        ("consul", T_A, "apex", "", ""),
        ("service.consul", T_A, "nxdomain", "", ""),  # no query part
        ("web.service.dc2.consul", T_A, "service", "web", ""),  # another datacenter: asked of it
        ("n1.node.dc2.consul", T_A, "node", "n1", ""),
        ("web.query.dc2.consul", T_A, "query", "web", ""),  # a prepared query is run in its datacenter
        ("web.addr.dc2.consul", T_A, "nxdomain", "", ""),  # only nodes, services and queries cross datacenters
        ("web.service.p1.peer.consul", T_A, "nxdomain", "", ""),  # no peering
        ("web.service.x.y.z.consul", T_A, "nxdomain", "", ""),  # odd locality
        ("_web._tcp.consul", T_A, "nxdomain", "", ""),  # the short RFC 2782 form is SRV-only
        ("example.com", T_A, "outside", "", ""),
        ("consul.example.com", T_A, "outside", "", ""),
    ],
)
def test_name_forms(name, qtype, kind, target, tag):
    lookup = parse(name, qtype)
    assert (lookup.kind, lookup.name, lookup.tag) == (kind, target, tag)


def test_lookup_names_another_datacenter():
    assert parse("web.service.dc2.consul").dc == "dc2"
    assert parse("_web._tcp.service.dc2.consul", T_SRV).dc == "dc2"
    assert parse("web.service.dc2.dc.consul").dc == "dc2"
    assert parse("web.service.dc1.consul").dc == "" and parse("web.service.consul").dc == ""
    assert parse("web.service.dc2.dc.x.ns.consul").kind == "nxdomain"  # only the default namespace


def test_lookup_remembers_which_domain_was_used():
    assert parse("web.service.consul").domain == "consul."
    assert parse("web.service.cairn.example").domain == "cairn.example."


def test_addr_names():
    assert parse("0a000005.addr.dc1.consul").ip == "10.0.0.5"
    assert parse("fd000000000000000000000000000007.addr.consul").ip == "fd00::7"
    assert parse("0a0005.addr.consul").kind == "nxdomain"
    assert parse("zz000005.addr.consul").kind == "nxdomain"
    assert hex_to_ip("7f000001") == "127.0.0.1"


def test_reverse_names():
    assert reverse_ip(("5", "0", "0", "10", "in-addr", "arpa")) == "10.0.0.5"
    assert reverse_ip(("0", "10", "in-addr", "arpa")) is None  # partial zone
    assert reverse_ip(("300", "0", "0", "10", "in-addr", "arpa")) is None
    nibbles = tuple(reversed("fd000000000000000000000000000007")) + ("ip6", "arpa")
    assert reverse_ip(nibbles) == "fd00::7"
    assert parse("5.0.0.10.in-addr.arpa").kind == "ptr"


def test_rfc1464_escaping():
    assert rfc1464("rack", "r1") == "rack=r1"
    assert rfc1464("a=b", "c") == "a`=b=c"
    assert rfc1464(" k ", "v`") == "` k` =v``"
    assert rfc1464("rfc1035-x", "only value") == "only value"


# ----------------------------------------------------------------------------- request parsing


def test_parse_request_rules():
    q = bytes(DNSRecord.question("web.service.consul").pack())
    assert parse_request(q).qtype == T_A
    with pytest.raises(BadRequest) as err:
        parse_request(q[:11])
    assert err.value.rcode is None  # too short: dropped
    with pytest.raises(BadRequest) as err:
        parse_request(q[:2] + bytes([q[2] | 0x80]) + q[3:])
    assert err.value.rcode is None  # a response: dropped, never answered (no reflection loops)
    with pytest.raises(BadRequest) as err:
        parse_request(q[:4] + b"\x00\x02" + q[6:])
    assert err.value.rcode == RCODE.FORMERR  # two questions announced
    with pytest.raises(BadRequest) as err:
        parse_request(q[:12] + b"\xc0\x0c\x00\x01\x00\x01")
    assert err.value.rcode == RCODE.FORMERR  # a pointer (a loop, here) in the question
    with pytest.raises(BadRequest) as err:
        parse_request(q[:2] + bytes([q[2] | (5 << 3)]) + q[3:])  # opcode UPDATE
    assert err.value.rcode == RCODE.NOTIMP


def test_edns_version_and_ecs():
    q = DNSRecord.question("web.service.consul")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    with pytest.raises(BadRequest) as err:
        parse_request(bytes(q.pack()))
    assert err.value.rcode == 16  # BADVERS (RFC 6891)


# Malformed packets (docs/dns.md "Malformed packets"; miekg/dns's server, Consul's): with a
# readable query header, FORMERR with the query's ID, QR set and the opcode echoed; the question is
# echoed only when it was read. Shorter than a header, or a response: dropped.


def _hdr(qid: int = 0xBEEF, *, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


_A_IN = struct.pack("!HH", 1, 1)
_OPT = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"  # root, OPT, size 4096, no options

MALFORMED = {  # case -> (packet, whether the question was read and is echoed)
    "label of 64 octets": (_hdr() + b"\x40" + b"a" * 64 + b"\x06consul\x00" + _A_IN, False),
    "extended label type": (_hdr() + b"\x41" + b"a" * 65 + b"\x00" + _A_IN, False),
    "reserved label type": (_hdr() + b"\x80" + b"\x00" + _A_IN, False),
    "name of 300 characters": (_hdr() + (b"\x3f" + b"a" * 63) * 4 + b"\x30" + b"b" * 48 + b"\x00" + _A_IN, False),
    "name of 256 octets": (_hdr() + (b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"b" * 62 + b"\x00" + _A_IN, False),
    "compression loop on itself": (_hdr() + b"\xc0\x0c" + _A_IN, False),
    "compression loop through a label": (_hdr() + b"\x03web\xc0\x0c" + _A_IN, False),
    "pointer out of range": (_hdr() + b"\xff\xff" + _A_IN, False),
    "pointer into the header": (_hdr() + b"\xc0\x02" + _A_IN, False),
    "truncated pointer": (_hdr() + b"\x03web\xc0", False),
    "header only, qdcount 1": (_hdr(), False),
    "name cut short": (_hdr() + b"\x07consu", False),
    "name without its root label": (_hdr() + b"\x06consul", False),
    "question without type and class": (_hdr() + b"\x06consul\x00\x00", False),
    "no question": (_hdr(qd=0), False),
    "two questions": (_hdr(qd=2) + (b"\x06consul\x00" + _A_IN) * 2, False),
    "answer record in a query": (_hdr(an=1) + b"\x06consul\x00" + _A_IN, False),
    "authority record in a query": (_hdr(ns=1) + b"\x06consul\x00" + _A_IN, False),
    "three additional records": (_hdr(ar=3) + b"\x06consul\x00" + _A_IN + _OPT * 3, False),
    "65535 additional records": (_hdr(ar=0xFFFF) + b"\x06consul\x00" + _A_IN, False),
    "additional record cut short": (_hdr(ar=1) + b"\x06consul\x00" + _A_IN + _OPT[:4], True),
    "additional record missing": (_hdr(ar=1) + b"\x06consul\x00" + _A_IN, True),
    "rdata past the end": (_hdr(ar=1) + b"\x06consul\x00" + _A_IN + _OPT[:-2] + b"\x00\x09", True),
    "two OPT records": (_hdr(ar=2) + b"\x06consul\x00" + _A_IN + _OPT * 2, True),
    "OPT under a looping pointer": (_hdr(ar=1) + b"\x06consul\x00" + _A_IN + b"\xc0\x18" + _OPT[1:], True),
    "EDNS option cut short": (_hdr(ar=1) + b"\x06consul\x00" + _A_IN + _OPT[:-2] + b"\x00\x02\x00\x08", True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_parse_request_malformed_is_formerr_with_the_header(case):
    data, echoed = MALFORMED[case]
    with pytest.raises(BadRequest) as err:
        parse_request(data)
    assert err.value.rcode == RCODE.FORMERR, err.value
    req = err.value.request
    assert req is not None and req.id == 0xBEEF and req.flags == 0x0100
    assert (req.labels == [b"consul"]) == echoed


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("tcp", [False, True])
def test_malformed_query_is_answered_formerr(case, tcp):
    data, echoed = MALFORMED[case]
    for qid in (0, 0x1234, 0xFFFF):
        packet = struct.pack("!H", qid) + data[2:]
        reply = Answerer(Settings()).respond(packet, Store(), random.Random(1), NOW, tcp=tcp)
        assert reply.wire is not None and reply.rcode == RCODE.FORMERR and not reply.error
        assert reply.deps is None  # never cached
        rid, flags, qd, an, ns, _ar = struct.unpack_from("!HHHHHH", reply.wire)
        assert rid == qid
        assert flags == 0x8000 | 0x0100 | RCODE.FORMERR  # QR, opcode QUERY and RD echoed, not AA
        assert (qd, an, ns) == (int(echoed), 0, 0)
        rec = DNSRecord.parse(reply.wire)
        if echoed:
            assert str(rec.q.qname) == "consul." and rec.q.qtype == QTYPE.A


def test_names_at_the_limits_are_read():
    # RFC 1035 §2.3.4: 63-octet labels, and 255 octets for the whole name (length bytes and root)
    longest = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(longest) == 255
    req = parse_request(_hdr() + longest + _A_IN)
    assert [len(label) for label in req.labels] == [63, 63, 63, 61]
    # two additional records are accepted (OPT and one more, as miekg/dns allows)
    req = parse_request(_hdr(ar=2) + b"\x06consul\x00" + _A_IN + _OPT + b"\xc0\x0c\x00\x10\x00\x01" + bytes(6))
    assert req.edns and req.udp_size == 4096


def test_headerless_packets_and_responses_are_dropped():
    q = bytes(DNSRecord.question("web.service.consul").pack())
    for data in (b"", q[:1], q[:11], q[:2] + bytes([q[2] | 0x80]) + q[3:], _hdr(flags=0x8000) + b"\xc0\x0c"):
        with pytest.raises(BadRequest) as err:
            parse_request(data)
        assert err.value.rcode is None
        assert header_request(data) is None
        reply = Answerer(Settings()).respond(data, Store(), random.Random(1), NOW)
        assert reply.wire is None and reply.forward is None and reply.remote is None
    assert header_request(q[:12]) == Request(q[0] << 8 | q[1], 0x0100, [], 0, 0)


def test_error_reply_echoes_only_what_was_read():
    bare = Request(7, 0x0100, [], 0, 0)
    assert answers_wire.error_reply(bare, RCODE.FORMERR, False) == struct.pack("!HHHHHH", 7, 0x8101, 0, 0, 0, 0)
    assert answers_wire.error_reply(bare, RCODE.FORMERR, True)[2:4] == b"\x81\x81"  # RA with recursors
    asked = Request(7, 0x0100, [b"Web", b"consul"], T_A, 1, edns=True, udp_size=1232)
    rec = DNSRecord.parse(answers_wire.error_reply(asked, RCODE.FORMERR, False))
    assert str(rec.q.qname) == "Web.consul." and rec.header.rcode == RCODE.FORMERR
    assert [(r.rtype, r.rclass) for r in rec.ar] == [(QTYPE.OPT, 1232)]
    # a question dnslib will not encode: the header alone, never an exception
    odd = Request(9, 0, [b"a" * 70], T_A, 1)
    assert answers_wire.error_reply(odd, RCODE.FORMERR, False) == struct.pack("!HHHHHH", 9, 0x8001, 0, 0, 0, 0)
    assert answers_wire.error_reply(None, RCODE.FORMERR, False) is None


def test_parser_work_is_bounded_by_the_packet():
    # the largest packets a socket hands over, built to make a naive parser loop or follow pointers
    worst = [
        _hdr() + b"\x3f" * 65000,  # labels that each claim to run to the end
        _hdr() + b"\x01a" * 32000 + b"\x00" + _A_IN,  # a name far past 255 octets
        _hdr(ar=2) + b"\x00" + _A_IN + (b"\xc0\x11" + b"\x00\x29" + bytes(8)) * 5000,  # pointer chains
        _hdr(ar=2) + b"\x00" + _A_IN + b"\x00\x00\x29\x10\x00\x00\x00\x00\xff\xf0" + b"\x00\x08\x00\x00" * 16380,
        _hdr(qd=0xFFFF, an=0xFFFF, ns=0xFFFF, ar=0xFFFF) + b"\xc0\x0c" * 32000,
    ]
    answerer = Answerer(Settings())
    start = time.perf_counter()
    for data in worst * 20:
        reply = answerer.respond(data, Store(), random.Random(1), NOW)
        assert reply.wire is not None and not reply.error and reply.wire[:2] == data[:2]
        assert reply.rcode in (RCODE.NOERROR, RCODE.FORMERR, RCODE.REFUSED)
    assert time.perf_counter() - start < 5.0  # about a millisecond in all when idle


def test_server_answers_malformed_packets_and_never_caches_them():
    server = DNSServer(Store(), RuntimeConfig(), rng=random.Random(3))
    for case, (data, _) in sorted(MALFORMED.items()):
        for qid, tcp in ((1, False), (2, False), (3, True)):
            out = server.answer(struct.pack("!H", qid) + data[2:], tcp)
            assert out.__class__ is bytes, case
            assert out[:2] == struct.pack("!H", qid) and out[2] & 0x80 and out[3] & 0xF == RCODE.FORMERR, case
    assert server._caches == ({}, {}) and server._cache_bytes == 0
    assert server.stats["cache_hits"] == 0 and server.stats["dropped"] == 0 and server.stats["servfail"] == 0
    assert server.answer(_hdr(flags=0x8000), False) is None and server.stats["dropped"] == 1


def test_ecs_is_echoed_with_scope_zero(cat):
    q = DNSRecord.question("web.service.consul")
    q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(8, bytes([0, 1, 24, 0, 10, 0, 1]))]))
    rec = ask(cat.store, "", raw=bytes(q.pack()))
    opt = [r for r in rec.ar if r.rtype == QTYPE.OPT][0]
    assert opt.rclass == 1232
    assert opt.rdata[0].code == 8 and opt.rdata[0].data[3] == 0


# ----------------------------------------------------------------------------- records (§6.3, §6.4)


def test_service_a_lists_passing_and_warning_not_critical(cat):
    rec = ask(cat.store, "web.service.consul")
    assert rec.header.rcode == RCODE.NOERROR and rec.header.aa == 1 and rec.header.ra == 0
    assert sorted(rdatas(rec)) == ["10.0.1.1", "10.9.0.2"]  # web-b uses its service address
    assert str(rec.rr[0].rname) == "web.service.consul."


def test_only_passing_drops_warning(cat):
    rec = ask(cat.store, "web.service.consul", settings=Settings(only_passing=True))
    assert rdatas(rec) == ["10.0.1.1"]


def test_node_maintenance_removes_instances(cat):
    cat.node_check("web-a", "_node_maintenance", "critical")
    assert rdatas(ask(cat.store, "web.service.consul")) == ["10.9.0.2"]
    cat.node_check("web-b", "serfHealth", "critical")
    assert ask(cat.store, "web.service.consul").header.rcode == RCODE.NXDOMAIN


def test_tag_lookup(cat):
    assert rdatas(ask(cat.store, "primary.web.service.consul")) == ["10.0.1.1"]
    assert rdatas(ask(cat.store, "PRIMARY.web.service.consul")) == ["10.0.1.1"]
    assert ask(cat.store, "nope.web.service.consul").header.rcode == RCODE.NXDOMAIN


def test_srv_with_additional_addresses(cat):
    rec = ask(cat.store, "web.service.consul", "SRV")
    srv = {r.rdata.port: str(r.rdata.target) for r in rec.rr}
    assert srv == {8080: "web-a.node.dc1.consul.", 8081: "0a090002.addr.dc1.consul."}
    extra = {(str(r.rname), QTYPE[r.rtype], str(r.rdata)) for r in rec.ar}
    assert ("web-a.node.dc1.consul.", "A", "10.0.1.1") in extra
    assert ("0a090002.addr.dc1.consul.", "A", "10.9.0.2") in extra
    assert ("web-a.node.dc1.consul.", "TXT", '"rack=r1"') in extra  # node meta TXT


def test_srv_weights_follow_status(cat):
    cat.service("web-b", "web-b", "web", 8081, address="10.9.0.2", status="warning",
                weights={"Passing": 10, "Warning": 2})
    rec = ask(cat.store, "_web._tcp.service.consul", "SRV")
    assert {r.rdata.port: r.rdata.weight for r in rec.rr} == {8080: 1, 8081: 2}
    assert all(r.rdata.priority == 1 for r in rec.rr)


def test_aaaa_and_family_mismatch(cat):
    assert rdatas(ask(cat.store, "web6.service.consul", "AAAA")) == ["fd00::7"]
    rec = ask(cat.store, "web6.service.consul", "A")  # exists, no IPv4: NOERROR + SOA
    assert rec.header.rcode == RCODE.NOERROR and not rec.rr and QTYPE[rec.auth[0].rtype] == "SOA"


def test_hostname_address_is_a_cname(cat):
    cat.service("web-a", "ext", "ext", 443, address="api.example.com")
    rec = ask(cat.store, "ext.service.consul")
    assert QTYPE[rec.rr[0].rtype] == "CNAME" and str(rec.rr[0].rdata) == "api.example.com."


def test_node_lookup_a_txt_any(cat):
    rec = ask(cat.store, "server-1.node.consul")
    assert rdatas(rec) == ["10.0.0.1"]
    assert sorted(rdatas(rec, "ar", "TXT")) == ['"consul-version=1.17.0"', '"plain"']
    assert sorted(rdatas(ask(cat.store, "server-1.node.consul", "TXT"))) == ['"consul-version=1.17.0"', '"plain"']
    assert len(ask(cat.store, "server-1.node.dc1.consul", "ANY").rr) == 3
    off = ask(cat.store, "server-1.node.consul", settings=Settings(node_meta_txt=False))
    assert not off.ar


def test_unknown_names_are_nxdomain_with_soa(cat):
    for name in ("nope.service.consul", "nope.node.consul", "x.consul", "zz.addr.consul"):
        rec = ask(cat.store, name)
        assert rec.header.rcode == RCODE.NXDOMAIN, name
        soa = rec.auth[0]
        assert QTYPE[soa.rtype] == "SOA" and str(soa.rname) == "consul."
        assert str(soa.rdata.mname) == "ns.consul." and str(soa.rdata.rname) == "hostmaster.consul."
        assert soa.rdata.times == (int(NOW), 3600, 600, 86400, 0)


def _remote(name: str, qtype: str, found, failed: str = "", settings: Settings | None = None) -> DNSRecord:
    reply = answer(Store(), name, qtype, settings=settings)
    assert reply.wire is None and reply.remote is not None and reply.remote.dc == "dc2"  # ask dc2
    out = Answerer(settings or Settings()).respond_remote(reply.request, reply.remote, found, random.Random(1), NOW,
                                                          failed=failed)
    assert out.wire is not None and out.deps is None and not out.error  # never cached
    return DNSRecord.parse(out.wire)


def test_another_datacenter_answers_from_its_health_list():
    # Consul: <svc>.service.<dc>.consul answers with that datacenter's healthy instances
    def csn(node, addr, svc_addr, status):
        return {"Node": {"Node": node, "Address": addr, "Meta": {}},
                "Service": {"Service": "web", "Address": svc_addr, "Port": 80, "Tags": ["blue"]},
                "Checks": [{"Status": "passing"}, {"Status": status}]}
    found = [csn("n1", "10.2.0.1", "", "passing"), csn("n2", "10.2.0.2", "", "critical"),
             csn("n3", "10.2.0.3", "10.2.9.3", "warning")]
    rec = _remote("web.service.dc2.consul", "A", found)
    assert rec.header.rcode == RCODE.NOERROR and sorted(rdatas(rec)) == ["10.2.0.1", "10.2.9.3"]
    assert rdatas(_remote("blue.web.service.dc2.consul", "A", found[:1])) == ["10.2.0.1"]
    srv = _remote("web.service.dc2.consul", "SRV", found[:1])
    assert rdatas(srv) == ["1 1 80 n1.node.dc2.consul."]  # the target names the other datacenter
    only = _remote("web.service.dc2.consul", "A", found, settings=Settings(only_passing=True))
    assert rdatas(only) == ["10.2.0.1"]
    assert _remote("web.service.dc2.consul", "A", []).header.rcode == RCODE.NXDOMAIN
    node = _remote("n1.node.dc2.consul", "A", {"Node": {"Node": "n1", "Address": "10.2.0.1", "Meta": {}}})
    assert rdatas(node) == ["10.2.0.1"]
    assert _remote("n9.node.dc2.consul", "A", None).header.rcode == RCODE.NXDOMAIN


def test_another_datacenter_errors():
    unknown = _remote("web.service.dc2.consul", "A", None, failed="no-path")  # Consul: ErrNoDCPath is NXDOMAIN
    assert unknown.header.rcode == RCODE.NXDOMAIN and QTYPE[unknown.auth[0].rtype] == "SOA"
    down = _remote("web.service.dc2.consul", "A", None, failed="Remote DC has no server currently reachable")
    assert down.header.rcode == RCODE.SERVFAIL
    garbage = Answerer(Settings()).respond_remote(answer(Store(), "web.service.dc2.consul").request,
                                                  answer(Store(), "web.service.dc2.consul").remote,
                                                  [{"Node": "not a map"}], random.Random(1), NOW)
    assert garbage.rcode == RCODE.SERVFAIL and garbage.wire is not None  # a remote answer we cannot use


def test_existing_name_other_type_is_noerror_with_soa(cat):
    rec = ask(cat.store, "web.service.consul", "MX")
    assert rec.header.rcode == RCODE.NOERROR and not rec.rr and QTYPE[rec.auth[0].rtype] == "SOA"


def test_soa_ns_and_apex(cat):
    rec = ask(cat.store, "consul", "SOA")
    assert QTYPE[rec.rr[0].rtype] == "SOA"
    assert [str(r.rdata) for r in rec.auth] == ["server-1.node.dc1.consul."]
    assert rdatas(rec, "ar") == ["10.0.0.1"]
    rec = ask(cat.store, "web.service.consul", "NS")
    assert [str(r.rname) for r in rec.rr] == ["consul."] and rdatas(rec) == ["server-1.node.dc1.consul."]
    assert ask(cat.store, "consul", "A").header.rcode == RCODE.NXDOMAIN


def test_zone_transfer_and_odd_classes():
    store = Store()
    assert ask(store, "consul", "AXFR").header.rcode == RCODE.NOTIMP
    q = DNSRecord.question("web.service.consul", "A", "CH")
    assert ask(store, "", raw=bytes(q.pack())).header.rcode == RCODE.NOTIMP


def test_outside_domain_refused_or_forwarded():
    store = Store()
    rec = ask(store, "example.com")
    assert rec.header.rcode == RCODE.REFUSED and rec.header.aa == 0
    reply = answer(store, "example.com", settings=Settings(recursors=True))
    assert reply.wire is None and reply.forward is not None and reply.deps is None
    assert ask(store, "web.service.consul", settings=Settings(recursors=True)).header.ra == 1


def test_ptr_for_node_and_service_addresses(cat):
    rec = ask(cat.store, "1.1.0.10.in-addr.arpa", "PTR")
    assert rdatas(rec) == ["web-a.node.dc1.consul."]
    rec = ask(cat.store, "2.0.9.10.in-addr.arpa", "PTR")
    assert rdatas(rec) == ["web.service.dc1.consul."]
    v6 = ".".join(reversed("fd000000000000000000000000000007")) + ".ip6.arpa"
    assert rdatas(ask(cat.store, v6, "PTR")) == ["web-v6.node.dc1.consul."]
    assert ask(cat.store, "9.9.9.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    assert answer(cat.store, "9.9.9.10.in-addr.arpa", "PTR", settings=Settings(recursors=True)).forward


def test_addr_lookup(cat):
    assert rdatas(ask(cat.store, "0a000005.addr.dc1.consul")) == ["10.0.0.5"]
    rec = ask(cat.store, "0a000005.addr.dc1.consul", "SRV")  # other types: the record in Additional
    assert not rec.rr and rdatas(rec, "ar") == ["10.0.0.5"]


def test_alt_domain_answers_in_the_domain_asked(cat):
    settings = Settings(alt_domain="cairn.example.")
    rec = ask(cat.store, "web.service.cairn.example", "SRV", settings=settings)
    assert {str(r.rdata.target) for r in rec.rr} == {"web-a.node.dc1.cairn.example.",
                                                     "0a090002.addr.dc1.cairn.example."}


def test_question_case_is_echoed(cat):
    rec = ask(cat.store, "Web.Service.Consul")
    assert str(rec.q.qname) == "Web.Service.Consul." and str(rec.rr[0].rname) == "Web.Service.Consul."


# ----------------------------------------------------------------------------- TTLs


def test_ttls(cat):
    settings = Settings(node_ttl=30, service_ttl={"*": 5, "we*": 7, "w*": 6, "web6": 9})
    assert {r.ttl for r in ask(cat.store, "web.service.consul", settings=settings).rr} == {7}  # longest prefix
    assert {r.ttl for r in ask(cat.store, "web6.service.consul", "AAAA", settings=settings).rr} == {9}
    assert {r.ttl for r in ask(cat.store, "consul.service.consul", settings=settings).rr} == {5}
    assert {r.ttl for r in ask(cat.store, "server-1.node.consul", settings=settings).rr} == {30}
    assert {r.ttl for r in ask(cat.store, "web.service.consul").rr} == {0}  # default 0


def test_ttls_from_runtime_config():
    from appliance.dns.answers import settings_from_config

    cfg = RuntimeConfig(dns_config=DNSConfig(node_ttl_s=10.0, service_ttl_s={"Web": 3.0}))
    s = settings_from_config(cfg)
    assert s.node_ttl == 10 and Answerer(s).service_ttl("web") == 3


# ----------------------------------------------------------------------------- shuffling, limits, truncation


def many(count: int, meta: dict | None = None) -> Catalog:
    c = Catalog()
    for i in range(count):
        c.node(f"n{i}", f"10.1.{i // 250}.{i % 250 + 1}", meta)
        c.service(f"n{i}", f"api-{i}", "api", 7000 + i)
    return c


def test_shuffle_is_seeded_and_varies():
    c = many(8)
    first = rdatas(ask(c.store, "api.service.consul", seed=7, edns=4096))
    assert first == rdatas(ask(c.store, "api.service.consul", seed=7, edns=4096))
    orders = {tuple(rdatas(ask(c.store, "api.service.consul", seed=s, edns=4096))) for s in range(10)}
    assert len(orders) > 5 and all(sorted(o) == sorted(first) for o in orders)


def test_a_record_limit():
    c = many(6)
    assert len(ask(c.store, "api.service.consul", edns=4096, settings=Settings(a_record_limit=2)).rr) == 2


def test_udp_answer_limit_without_edns():
    c = many(6)
    rec = ask(c.store, "api.service.consul")
    assert len(rec.rr) == 3 and rec.header.tc == 0  # trimmed silently by default
    rec = ask(c.store, "api.service.consul", settings=Settings(enable_truncate=True))
    assert len(rec.rr) == 3 and rec.header.tc == 1
    assert len(ask(c.store, "api.service.consul", settings=Settings(udp_answer_limit=20)).rr) == 6
    assert len(ask(c.store, "api.service.consul", edns=1232).rr) == 6  # EDNS lifts the count limit
    assert len(ask(c.store, "api.service.consul", tcp=True).rr) == 6  # TCP: no limit


def test_size_trimming_keeps_replies_within_limits():
    c = many(120, meta={"k" * 40: "v" * 200})
    settings = Settings(enable_truncate=True, udp_answer_limit=8)
    udp = answer(c.store, "api.service.consul", "SRV", settings=settings).wire
    assert len(udp) <= 512
    rec = DNSRecord.parse(udp)
    assert rec.header.tc == 1 and 1 <= len(rec.rr) < 8
    targets = {str(r.rdata.target) for r in rec.rr}
    assert {str(r.rname) for r in rec.ar} <= targets  # Additional follows the answers kept
    big = answer(c.store, "api.service.consul", "SRV", settings=settings, edns=4096).wire
    assert 512 < len(big) <= 4096 and DNSRecord.parse(big).header.tc == 1
    full = DNSRecord.parse(answer(c.store, "api.service.consul", "SRV", settings=settings, tcp=True).wire)
    assert len(full.rr) == 120 and full.header.tc == 0


def test_disable_compression_makes_longer_replies(cat):
    small = answer(cat.store, "web.service.consul", "SRV").wire
    plain = answer(cat.store, "web.service.consul", "SRV", settings=Settings(disable_compression=True)).wire
    assert len(plain) > len(small)
    assert len(DNSRecord.parse(plain).rr) == len(DNSRecord.parse(small).rr) == 2


# ----------------------------------------------------------------------------- the wire cache (server)


def test_answer_cache_follows_catalog_changes(cat):
    server = DNSServer(cat.store, RuntimeConfig(), rng=random.Random(3))
    q = bytes(DNSRecord.question("web.service.consul").pack())
    first = server.answer(q, False)
    assert sorted(rdatas(DNSRecord.parse(first))) == ["10.0.1.1", "10.9.0.2"]
    for _ in range(20):
        server.answer(q, False)
    assert server.stats["cache_hits"] > 10
    q2 = b"\x12\x34" + q[2:]
    assert server.answer(q2, False)[:2] == b"\x12\x34"  # the ID is patched into cached bytes
    cat.node_check("web-a", "_node_maintenance", "critical")  # the very next answer changes
    assert rdatas(DNSRecord.parse(server.answer(q, False))) == ["10.9.0.2"]
    cat.node("other", "10.5.5.5")  # a write elsewhere leaves the entry current
    hits = server.stats["cache_hits"]
    server.answer(q, False)
    assert server.stats["cache_hits"] == hits + 1


def test_cache_keeps_shuffled_variants():
    c = many(3)
    server = DNSServer(c.store, RuntimeConfig(), rng=random.Random(5))
    q = bytes(DNSRecord.question("api.service.consul").pack())
    orders = {tuple(rdatas(DNSRecord.parse(server.answer(q, False)))) for _ in range(60)}
    assert len(orders) > 1


def test_recursor_pointing_at_ourselves_is_dropped():
    cfg = RuntimeConfig(recursors=("127.0.0.1:8600", "8.8.8.8", "[::1]:53"))
    server = DNSServer(Store(), cfg)
    assert server.recursors == [("8.8.8.8", 53), ("::1", 53)]


# ----------------------------------------------------------------------------- resolver snippets


def test_shipped_dnsmasq_and_resolved_files_match_the_cli():
    assert (ROOT / "packaging/common/dnsmasq/10-cairn").read_text() == dnsmasq_config()
    assert (ROOT / "packaging/common/systemd-resolved/cairn.conf").read_text() == resolved_config()
    text = dnsmasq_config("cairn.", "127.0.0.2", 5353)
    assert "server=/cairn/127.0.0.2#5353" in text and "#rev-server=10.0.0.0/8,127.0.0.2#5353" in text
    assert "[Resolve]\nDNS=127.0.0.1:8600\n" in resolved_config()
    assert "Domains=~consul" in resolved_config()


def test_runtime_config_replace_reconfigures_server():
    server = DNSServer(Store(), RuntimeConfig())
    server.configure(replace(RuntimeConfig(), recursors=("9.9.9.9",)))
    assert server.recursors == [("9.9.9.9", 53)] and server.answerer.s.recursors


def test_cache_is_bounded_by_entries_and_bytes():
    from appliance.dns import server as dns_server

    c = many(3)
    server = DNSServer(c.store, RuntimeConfig(), cache_entries=50)
    for i in range(200):
        server.answer(bytes(DNSRecord.question(f"n{i}.node.consul").pack()), False)
    assert len(server._caches[False]) <= 50
    assert server._cache_bytes == sum(e.size for e in server._caches[False].values())
    old = dns_server.CACHE_MAX_BYTES
    dns_server.CACHE_MAX_BYTES = 2000
    try:
        for i in range(200):
            server.answer(bytes(DNSRecord.question(f"x{i}.service.consul").pack()), False)
        assert server._cache_bytes <= 2000 + 600
    finally:
        dns_server.CACHE_MAX_BYTES = old
