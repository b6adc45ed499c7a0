"""The DNS reply encoder and the compiled answer plans (appliance.dns.answers_wire, plans).

The encoder must write exactly what dnslib's encoder writes for the same records (the bytes
cairn answered with before it had its own): the same name compression (case-sensitive suffixes,
none at offsets a 14-bit pointer cannot reach), SRV targets in full, the same failures for names
too long. Three checks, over generated records and catalogs (hypothesis):

* records packed by `answers_wire` and by dnslib's `DNSBuffer` are the same bytes;
* every reply the Answerer gives, parsed by dnslib and packed again by dnslib, is the same bytes;
* an Answerer that reuses its plans across catalog changes answers exactly like a new Answerer
  that reads everything from the store, for the same random state.
"""

from __future__ import annotations

import random

import pytest
from dnslib import AAAA, CNAME, EDNS0, NS, PTR, RR, SOA, SRV, TXT, A, DNSLabel, DNSQuestion, DNSRecord
from dnslib.label import DNSBuffer
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.dns import answers_wire as wire
from appliance.dns.answers import Answerer, Settings
from appliance.dns.names import T_A, T_AAAA, T_CNAME, T_NS, T_PTR, T_SOA, T_SRV, T_TXT, parse_request
from appliance.dns.plans import Plans
from tests.unit.test_dns_answers import Catalog as BaseCatalog

NOW = 1_700_000_000.0

# ----------------------------------------------------------------------------- dnslib, the reference


class _Names(dict):  # type: ignore[type-arg]
    """dnslib's table minus offsets a pointer cannot reach (what replies past 16 KiB always used)."""

    def __setitem__(self, key, value):
        if value < 0x4000:
            dict.__setitem__(self, key, value)


class _NoNames(dict):  # type: ignore[type-arg]
    def __setitem__(self, key, value):
        return None


def dnslib_pack(header, question, sections, compress: bool) -> bytes:
    buf = DNSBuffer()
    buf.names = _Names() if compress else _NoNames()
    header.pack(buf)
    if question is not None:
        question.pack(buf)
    for section in sections:
        for rr in section:
            rr.pack(buf)
    return bytes(buf.data)


# ----------------------------------------------------------------------------- records

LABELS = [b"web", b"WEB", b"service", b"consul", b"node", b"dc1", b"n-1", b"a" * 63, b"x.y", b"", b"Consul"]


@st.composite
def names(draw):
    """Names from a small pool of labels, so suffixes repeat and compress; some too long to pack."""
    return tuple(draw(st.lists(st.sampled_from(LABELS), max_size=6)))


@st.composite
def records(draw):
    """(our Rec, dnslib's RR) for one record of a type cairn answers with."""
    owner = draw(names())
    ttl = draw(st.sampled_from([0, 30, 3600, 2**32 - 1]))
    kind = draw(st.sampled_from(["A", "AAAA", "TXT", "CNAME", "NS", "PTR", "SOA", "SRV"]))
    if kind == "A":
        ip = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
        return wire.Rec(owner, T_A, ttl, wire.rd_a(ip)), RR(DNSLabel(owner), T_A, ttl=ttl, rdata=A(ip))
    if kind == "AAAA":
        ip = draw(st.sampled_from(["::1", "fd00::7", "2001:db8::a:b:c", "fe80::1:2:3:4"]))
        return wire.Rec(owner, T_AAAA, ttl, wire.rd_aaaa(ip)), RR(DNSLabel(owner), T_AAAA, ttl=ttl, rdata=AAAA(ip))
    if kind == "TXT":
        chunks = draw(st.lists(st.binary(max_size=255), min_size=1, max_size=4))
        return wire.Rec(owner, T_TXT, ttl, wire.rd_txt(chunks)), RR(DNSLabel(owner), T_TXT, ttl=ttl, rdata=TXT(chunks))
    target = draw(names())
    if kind in ("CNAME", "NS", "PTR"):
        rtype, cls = {"CNAME": (T_CNAME, CNAME), "NS": (T_NS, NS), "PTR": (T_PTR, PTR)}[kind]
        return wire.Rec(owner, rtype, ttl, (target,)), RR(DNSLabel(owner), rtype, ttl=ttl, rdata=cls(DNSLabel(target)))
    if kind == "SOA":
        times = (draw(st.integers(0, 2**32 - 1)), 3600, 600, 86400, 0)
        other = draw(names())
        ours = wire.Rec(owner, T_SOA, ttl, (target, other, b"".join(t.to_bytes(4, "big") for t in times)))
        return ours, RR(DNSLabel(owner), T_SOA, ttl=ttl, rdata=SOA(DNSLabel(target), DNSLabel(other), times))
    weight, port = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    fixed = b"\x00\x01" + weight.to_bytes(2, "big") + port.to_bytes(2, "big")
    ours = wire.Rec(owner, T_SRV, ttl, (fixed, wire.NoCompress(target)))
    return ours, RR(DNSLabel(owner), T_SRV, ttl=ttl, rdata=SRV(1, weight, port, DNSLabel(target)))


def _request(qname: tuple[bytes, ...], qtype: int) -> object:
    q = DNSRecord.question(".", "A")
    q.q.qname, q.q.qtype, q.header.id = DNSLabel(qname), qtype, 0x4242
    return q


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=40), st.integers(0, 80), names(), st.booleans(), st.data())
def test_packer_writes_what_dnslib_writes(recs, padding, qname, compress, data):
    """Any records, split over the three sections, past 16 KiB at times (TXT padding): the same
    bytes as dnslib's encoder, or the same refusal (a name or label too long)."""
    pad = [wire.Rec((b"pad", b"consul"), T_TXT, 0, wire.rd_txt([b"p" * 255] * 3))] * padding
    pad_rr = [RR(DNSLabel((b"pad", b"consul")), T_TXT, ttl=0, rdata=TXT([b"p" * 255] * 3))] * padding
    cut1 = data.draw(st.integers(0, len(recs)))
    cut2 = data.draw(st.integers(cut1, len(recs)))
    ours = [r for r, _ in recs]
    theirs = [rr for _, rr in recs]
    sections = (pad + ours[:cut1], ours[cut1:cut2], ours[cut2:])
    qname = qname if len(b".".join(qname)) <= 253 and all(0 < len(x) < 64 for x in qname) else (b"q",)
    req = parse_request(bytes(_request(qname, T_A).pack()))
    header = DNSRecord.question("x").header
    header.id, header.bitmap = req.id, 0x8400
    header.q, header.a, header.auth, header.ar = 1, len(sections[0]), len(sections[1]), len(sections[2])
    try:
        expected = dnslib_pack(header, DNSQuestion(DNSLabel(qname), T_A, 1),
                               (pad_rr + theirs[:cut1], theirs[cut1:cut2], theirs[cut2:]), compress)
    except Exception as err:  # noqa: BLE001 - dnslib refuses: so must we
        with pytest.raises(type(err)):
            wire._pack(req, 0x8400, True, *sections, b"", compress)
        return
    assert wire._pack(req, 0x8400, True, *sections, b"", compress) == expected


def test_pointers_stop_at_16k():
    """Past offset 0x3FFF a name is not remembered (a pointer there would need 15 bits); one
    remembered earlier is still pointed at."""
    req = parse_request(bytes(DNSRecord.question("q.consul").pack()))
    pad = wire.Rec((b"pad",), T_TXT, 0, wire.rd_txt([b"p" * 255] * 64))  # 16 KiB of TXT
    late = wire.Rec((b"late", b"example"), T_A, 0, wire.rd_a("10.0.0.1"))
    again = wire.Rec((b"pad",), T_A, 0, wire.rd_a("10.0.0.2"))
    out = wire._pack(req, 0x8400, True, [pad, late, late, again], [], [], b"", True)
    assert out.index(b"\x04late\x07example\x00") > 0x4000
    assert out.count(b"\x04late\x07example\x00") == 2  # written in full both times
    assert out.endswith(b"\xc0\x1a\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x0a\x00\x00\x02")  # `pad` at 26


# ----------------------------------------------------------------------------- replies from catalogs

ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.2", "fd00::7", "host.example.com", "Host.Example.COM.", "", "::1"]
STATUSES = [None, "passing", "passing", "warning", "critical"]


class Catalog(BaseCatalog):
    def apply(self, cmd: dict) -> None:  # any outcome: a generated change may be refused
        self.index += 1
        self.fsm.apply(self.index, cmd)

    def deregister(self, node: str, sid: str) -> None:
        self.apply({"Type": "deregister", "Node": node, "ServiceID": sid})


@st.composite
def operations(draw):
    """A catalog change: an instance (re)registered with a status, or deregistered, or a node readdressed."""
    node = f"n{draw(st.integers(0, 5))}"
    kind = draw(st.sampled_from(["instance", "instance", "deregister", "node"]))
    sid = f"{draw(st.sampled_from(['web', 'db']))}-{node}-{draw(st.integers(0, 1))}"
    if kind == "node":
        return ("node", node, draw(st.sampled_from(ADDRESSES[:5])), draw(st.sampled_from([{}, {"rack": "r1"}])))
    if kind == "deregister":
        return ("deregister", node, sid)
    address, port = draw(st.sampled_from(ADDRESSES)), draw(st.sampled_from([80, 8080]))
    tags, status = draw(st.sampled_from([[], ["primary"]])), draw(st.sampled_from(STATUSES))
    return ("instance", node, sid, sid.split("-")[0], address, port, tags, status)


def run(cat: Catalog, op: tuple) -> None:
    if op[0] == "node":
        cat.node(op[1], op[2], op[3])
    elif op[0] == "deregister":
        cat.deregister(op[1], op[2])
    else:
        _, node, sid, service, address, port, tags, status = op
        if cat.store.node(node) is None:
            cat.node(node, "10.1.0.1", {})
        cat.service(node, sid, service, port, address=address, tags=tags, status=status,
                    weights={"Passing": 3, "Warning": 1})


QUESTIONS = [("web.service.consul", "A"), ("WEB.Service.consul", "A"), ("primary.web.service.consul", "AAAA"),
             ("web.service.consul", "SRV"), ("_db._tcp.service.consul", "SRV"), ("db.service.consul", "ANY"),
             ("web.service.consul", "TXT"), ("n1.node.consul", "A"), ("N2.node.dc1.consul", "ANY"),
             ("n3.node.consul", "TXT"), ("0a000001.addr.consul", "A"), ("web.service.consul", "MX"),
             ("nope.service.consul", "A"), ("consul", "SOA"), ("1.0.0.10.in-addr.arpa", "PTR")]
SETTINGS = [Settings(), Settings(disable_compression=True, a_record_limit=1),
            Settings(only_passing=True, udp_answer_limit=2, enable_truncate=True, node_meta_txt=False)]


def query(name: str, qtype: str, edns: int | None) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = 0x1234
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return bytes(q.pack())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations(), min_size=1, max_size=25), st.sampled_from(range(len(SETTINGS))),
       st.sampled_from([None, 1232]), st.integers(0, 2**32))
def test_plans_answer_like_the_store_after_every_change(ops, which, edns, seed):
    """A long-lived Answerer (its plans kept across changes) against a new one per question that
    reads the store afresh: the same reply bytes, and every reply survives dnslib's parse and
    repack unchanged."""
    cat = Catalog()
    kept = Answerer(SETTINGS[which])
    for step, op in enumerate(ops):
        run(cat, op)
        for name, qtype in QUESTIONS:
            data = query(name, qtype, edns)
            tcp = step % 3 == 0
            reply = kept.respond(data, cat.store, random.Random(seed + step), NOW, tcp=tcp)
            fresh = Answerer(SETTINGS[which]).respond(data, cat.store, random.Random(seed + step), NOW, tcp=tcp)
            assert (reply.wire, reply.rcode, reply.deps, reply.shuffled) == \
                (fresh.wire, fresh.rcode, fresh.deps, fresh.shuffled), (name, qtype, op)
            assert not reply.error, reply.error
            assert_dnslib_repacks(reply.wire, compress=not SETTINGS[which].disable_compression)


def assert_dnslib_repacks(data: bytes, *, compress: bool) -> None:
    rec = DNSRecord.parse(data)
    question = rec.questions[0] if rec.questions else None
    assert dnslib_pack(rec.header, question, (rec.rr, rec.auth, rec.ar), compress) == data


def one_instance() -> tuple[Catalog, Answerer, bytes]:
    """`web` on n1 (10.0.0.1), an Answerer, and the question `web.service.consul A`."""
    cat = Catalog()
    cat.node("n1", "10.0.0.1", {})
    cat.service("n1", "web-1", "web", 80, status="passing")
    return cat, Answerer(Settings()), query("web.service.consul", "A", None)


def test_a_change_reaches_the_next_answer_through_the_plan():
    cat, answerer, q = one_instance()

    def addresses() -> list[str]:
        reply = answerer.respond(q, cat.store, random.Random(1), NOW)
        return sorted(str(r.rdata) for r in DNSRecord.parse(reply.wire).rr)

    assert addresses() == ["10.0.0.1"]
    cat.node("n2", "10.0.0.2", {})
    cat.service("n2", "web-2", "web", 80, status="passing")
    assert addresses() == ["10.0.0.1", "10.0.0.2"]
    cat.service("n1", "web-1", "web", 80, status="critical")
    assert addresses() == ["10.0.0.2"]
    cat.node("n2", "10.0.0.9", {})  # the node's own address moves: the service's plan follows
    assert addresses() == ["10.0.0.9"]
    cat.service("n2", "db-1", "db", 80, status="critical")  # another service's write
    assert addresses() == ["10.0.0.9"]


def test_plans_are_kept_per_store_and_not_for_views():
    cat, answerer, q = one_instance()
    answerer.respond(q, cat.store, random.Random(1), NOW)
    (plan,) = answerer.plans.table.values()
    assert plan.message is not None and plan.store is cat.store

    class View:  # what an ACL view looks like to the answerer: the store's reads, another object
        def __getattr__(self, name):
            return getattr(cat.store, name)

    other = Catalog()
    other.node("n1", "10.0.0.7", {})
    other.service("n1", "web-1", "web", 80, status="passing")
    rec = DNSRecord.parse(answerer.respond(q, other.store, random.Random(1), NOW).wire)
    assert [str(r.rdata) for r in rec.rr] == ["10.0.0.7"]  # another store: compiled again
    answerer.respond(q, View(), random.Random(1), NOW)
    assert plan.store is other.store  # the view's answer was not kept


def test_plan_table_is_bounded_by_names_and_records():
    cat = Catalog()
    for i in range(40):
        cat.node(f"n{i}", f"10.0.0.{i + 1}", {"rack": "r"})
        cat.service(f"n{i}", f"web-{i}", "web", 80, status="passing")
    answerer = Answerer(Settings())
    answerer.plans = Plans(entries=16, records=300)
    for i in range(100):
        answerer.respond(query(f"x{i}.web.service.consul", "A", None), cat.store, random.Random(1), NOW)
    assert len(answerer.plans.table) == 16
    spellings = ["web", "Web", "wEb", "weB", "WEb", "wEB", "WEB"]
    for name in spellings:  # one plan for every spelling: the key is the lowercased name
        answerer.respond(query(f"{name}.service.consul", "SRV", None), cat.store, random.Random(1), NOW)
    assert sum(1 for key in answerer.plans.table if key[0] == b"\x03web\x07service\x06consul\x00") == 1
    for qtype in ("A", "TXT", "ANY", "AAAA"):
        answerer.respond(query("web.service.consul", qtype, None), cat.store, random.Random(1), NOW)
    plans = answerer.plans
    assert plans.weight <= 300 and plans.weight == sum(p.weight for p in plans.table.values())
    small = Answerer(Settings())
    small.plans = Plans(records=10)  # a plan alone over the budget is answered, not kept
    reply = small.respond(query("web.service.consul", "SRV", 4096), cat.store, random.Random(1), NOW)
    assert len(DNSRecord.parse(reply.wire).rr) == 40 and small.plans.weight == 0


def test_an_instance_that_cannot_be_encoded_fails_only_the_replies_that_reach_it():
    """A host name address with a 64-octet label cannot be written: a reply fails (SERVFAIL)
    exactly when it includes that instance, as building the records per reply always did."""
    cat = Catalog()
    cat.node("n1", "10.0.0.1", {})
    cat.service("n1", "web-1", "web", 80, status="passing")
    cat.node("n2", "10.0.0.2", {})
    cat.service("n2", "web-2", "web", 80, address="a" * 64 + ".example", status="passing")
    answerer = Answerer(Settings(a_record_limit=1))
    outcomes = {}
    for seed in range(20):
        for qtype in ("A", "SRV"):
            reply = answerer.respond(query("web.service.consul", qtype, 4096), cat.store, random.Random(seed), NOW)
            outcomes.setdefault(qtype, set()).add(reply.rcode)
            if reply.rcode == 0:
                rec = DNSRecord.parse(reply.wire)
                assert qtype == "A" and [str(r.rdata) for r in rec.rr] == ["10.0.0.1"]
            else:
                assert reply.rcode == 2 and "label" in reply.error.lower(), reply.error
    assert outcomes == {"A": {0, 2}, "SRV": {2}}  # A: the limit stops before the bad one half the time
