"""Malformed DNS packets against a real `cairn agent -dev`, over real UDP and TCP sockets.

The rule (docs/dns.md, "Malformed packets"; miekg/dns's server, which Consul runs): a packet whose
12-byte header can be read and that is a query (QR clear) always gets an answer with its ID, QR
set and the opcode echoed: FORMERR when the rest cannot be read, with the question echoed only
when it was read. Only a packet shorter than a header, or a response (QR set), is dropped with no
reply (RFC 1035 §4.1.1 gives the ID to the header; answering a response could start a loop).
After every hostile packet the agent is alive and answers a good query. DESIGN: bad input never
kills the agent.
"""

from __future__ import annotations

import socket
import struct

import pytest
from dnslib import QTYPE, DNSRecord

from tests.conftest import wait_until

FORMERR, NOTIMP = 1, 4


def header(qid: int, *, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


A_IN = struct.pack("!HH", 1, 1)

# name -> (packet without its ID, whether the question is echoed in the FORMERR reply)
MALFORMED: dict[str, tuple[bytes, bool]] = {
    # RFC 1035 §2.3.4: a label is at most 63 octets (64-191 as a length byte is no label at all)
    "label of 64 octets": (header(0)[2:] + b"\x40" + b"a" * 64 + b"\x06consul\x00" + A_IN, False),
    # RFC 1035 §2.3.4: a name is at most 255 octets; this one is 306
    "name of 300 characters": (header(0)[2:] + (b"\x3f" + b"a" * 63) * 4 + b"\x30" + b"b" * 48 + b"\x00" + A_IN,
                               False),
    # a pointer to itself, and a label followed by a pointer back to the start of the name
    "compression loop on itself": (header(0)[2:] + b"\xc0\x0c" + A_IN, False),
    "compression loop through a label": (header(0)[2:] + b"\x03web\xc0\x0c" + A_IN, False),
    # pointers past the end of the packet, and into the header
    "pointer out of range": (header(0)[2:] + b"\xff\xff" + A_IN, False),
    "pointer past the end": (header(0)[2:] + b"\x03web\xc0\x40" + A_IN, False),
    "pointer into the header": (header(0)[2:] + b"\xc0\x02" + A_IN, False),
    # qdcount 1 and nothing after the header
    "header only, qdcount 1": (header(0)[2:], False),
    "name cut short": (header(0)[2:] + b"\x07consu", False),
    "question without type and class": (header(0)[2:] + b"\x06consul\x00\x00", False),
    "no question": (header(0, qd=0)[2:], False),
    "two questions": (header(0, qd=2)[2:] + b"\x06consul\x00" + A_IN + b"\x06consul\x00" + A_IN, False),
    "an answer record in a query": (header(0, an=1)[2:] + b"\x06consul\x00" + A_IN, False),
    "three additional records": (header(0, ar=3)[2:] + b"\x06consul\x00" + A_IN, False),
    # the question reads; the OPT record after it does not (so the question is echoed)
    "additional record cut short": (header(0, ar=1)[2:] + b"\x06consul\x00" + A_IN + b"\x00\x00\x29\x10", True),
    "two OPT records": (header(0, ar=2)[2:] + b"\x06consul\x00" + A_IN
                        + (b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00") * 2, True),
    "OPT under a looping pointer": (header(0, ar=1)[2:] + b"\x06consul\x00" + A_IN
                                    + b"\xc0\x18\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00", True),
}  # fmt: skip

DROPPED: dict[str, bytes] = {
    "empty": b"",
    "eleven bytes": header(0)[:11],
    "a response": header(0, flags=0x8180) + b"\x06consul\x00" + A_IN,
    "a response, malformed": header(0, flags=0x8000) + b"\xc0\x0c" + A_IN,
}


def with_id(qid: int, rest: bytes) -> bytes:
    return struct.pack("!H", qid) + rest


def udp_ask(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recvfrom(65535)[0]
        except TimeoutError:
            return None


def tcp_send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!H", len(data)) + data)


def tcp_read(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the agent")
            buf += chunk
        return buf

    (size,) = struct.unpack("!H", exactly(2))
    return exactly(size)


def tcp_ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        tcp_send(sock, data)
        return tcp_read(sock)


def good_query(qid: int) -> bytes:
    q = DNSRecord.question("test-node.node.consul", "A")
    q.header.id = qid
    return bytes(q.pack())


def assert_good_answer(reply: bytes | None, qid: int) -> None:
    assert reply is not None, "no answer to a good query"
    rec = DNSRecord.parse(reply)
    assert rec.header.id == qid and rec.header.qr == 1 and rec.header.rcode == 0
    assert [str(rr.rdata) for rr in rec.rr if rr.rtype == QTYPE.A] == ["127.0.0.1"]


def assert_formerr(reply: bytes | None, qid: int, question_echoed: bool) -> None:
    assert reply is not None, "no FORMERR reply"
    assert len(reply) >= 12
    rid, flags, qd, an, ns, _ar = struct.unpack_from("!HHHHHH", reply)
    assert rid == qid, "the reply carries the query's ID"
    assert flags & 0x8000, "QR set"
    assert (flags >> 11) & 0xF == 0, "opcode QUERY echoed"
    assert flags & 0x0100, "RD echoed"
    assert flags & 0xF == FORMERR
    assert (an, ns) == (0, 0)
    assert qd == (1 if question_echoed else 0)
    DNSRecord.parse(reply)  # a well-formed message itself


@pytest.fixture
def dns_agent(agent):
    wait_until(lambda: udp_ask(agent.dns_port, good_query(1), timeout=0.5) is not None, what="the DNS server")
    return agent


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_query_gets_formerr_over_udp_and_tcp(dns_agent, case):
    rest, echoed = MALFORMED[case]
    port = dns_agent.dns_port
    for qid in (0x0000, 0xBEEF, 0xFFFF):
        data = with_id(qid, rest)
        assert_formerr(udp_ask(port, data), qid, echoed)
        assert_formerr(tcp_ask(port, data), qid, echoed)
    assert dns_agent.alive()
    assert_good_answer(udp_ask(port, good_query(0x1234)), 0x1234)
    assert_good_answer(tcp_ask(port, good_query(0x4321)), 0x4321)


def test_non_query_opcode_is_notimp_with_the_opcode_echoed(dns_agent):
    data = header(0x7777, flags=(5 << 11) | 0x0100) + b"\x06consul\x00" + A_IN  # UPDATE
    for reply in (udp_ask(dns_agent.dns_port, data), tcp_ask(dns_agent.dns_port, data)):
        assert reply is not None
        rid, flags = struct.unpack_from("!HH", reply)
        assert rid == 0x7777 and flags & 0x8000 and (flags >> 11) & 0xF == 5 and flags & 0xF == NOTIMP


@pytest.mark.parametrize("case", sorted(DROPPED))
def test_headerless_packets_and_responses_are_dropped(dns_agent, case):
    port = dns_agent.dns_port
    assert udp_ask(port, DROPPED[case], timeout=0.5) is None
    # over TCP nothing is written back for it, and the connection still serves the next query
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        tcp_send(sock, DROPPED[case])
        tcp_send(sock, good_query(0x5151))
        assert_good_answer(tcp_read(sock), 0x5151)
    assert dns_agent.alive()
    assert_good_answer(udp_ask(port, good_query(0x2222)), 0x2222)


def test_pipelined_malformed_queries_on_one_tcp_connection_are_answered_in_order(dns_agent):
    cases = sorted(MALFORMED)
    with socket.create_connection(("127.0.0.1", dns_agent.dns_port), timeout=5) as sock:
        for i, case in enumerate(cases):
            tcp_send(sock, with_id(100 + i, MALFORMED[case][0]))
        tcp_send(sock, DROPPED["a response"])
        tcp_send(sock, good_query(999))
        for i, case in enumerate(cases):
            assert_formerr(tcp_read(sock), 100 + i, MALFORMED[case][1])
        assert_good_answer(tcp_read(sock), 999)


def test_a_flood_of_malformed_packets_leaves_the_agent_answering(dns_agent):
    port = dns_agent.dns_port
    packets = [with_id(i, rest) for i, (rest, _) in enumerate(MALFORMED.values())] + list(DROPPED.values())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(200):
            for data in packets:
                sock.sendto(data, ("127.0.0.1", port))
    assert_good_answer(udp_ask(port, good_query(0x3333), timeout=5), 0x3333)
    assert dns_agent.alive()
    log = dns_agent.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "DNS query failed" not in log and "DNS answer failed" not in log
