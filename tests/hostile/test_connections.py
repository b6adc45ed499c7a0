"""Hostile connections against a real `cairn agent -dev`: slow, oversized and malformed requests.

What Go's net/http (Consul's HTTP server) does with them, and what cairn must do too (docs/http-api.md,
"Connections and limits"; appliance/http/app.py):

- a request head arriving too slowly is cut at `http_config.read_header_timeout`, a body at
  `read_timeout`, an idle keep-alive connection at `idle_timeout`; nothing is answered, the
  connection is closed;
- slow or silent connections cannot lock the other programs of their address out: past
  `limits.http_max_conns_per_client`, the connection that has waited longest for a request makes room;
- a head up to `max_header_bytes` (1 MiB) is read (long KV keys, long filters), a longer one gets
  `431 Request Header Fields Too Large`;
- any token is a method (405 from the router when the route does not take it), HTTP/0.9 and 2.0
  request lines get 505, and malformed heads `400 Bad Request`, with Go's plain texts and
  `Connection: close`;
- none of it writes a traceback to the agent's log or takes the agent down.

Every test talks raw HTTP/1.1 over real sockets. The timeouts are shortened through the agent's
configuration (`-hcl 'http_config { ... }'`), the same keys an operator sets.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentProcess, http, wait_until

pytestmark = pytest.mark.timeout(120)

HEADER_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
IDLE_TIMEOUT_S = 4.0
SHORT_TIMEOUTS = (
    f'http_config {{ read_header_timeout = "{HEADER_TIMEOUT_S:g}s" read_timeout = "{READ_TIMEOUT_S:g}s" '
    f'idle_timeout = "{IDLE_TIMEOUT_S:g}s" }}'
)
GO_ERROR_HEADERS = {"content-type": "text/plain; charset=utf-8", "connection": "close"}


# --------------------------------------------------------------------------------------------
# helpers


class Log:
    """The agent's log, read from a mark: what one test wrote."""

    def __init__(self, agent: AgentProcess) -> None:
        self.path = agent.log_path
        self.mark = self.path.stat().st_size

    def text(self) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(self.mark)
            return fh.read().decode("utf-8", "replace")

    def assert_clean(self) -> None:
        text = self.text()
        assert "Traceback" not in text, text[-3000:]
        assert "[ERROR]" not in text, text[-3000:]


def connect(agent: AgentProcess, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", agent.http_port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the agent sends until it closes (or the socket's timeout, which fails)."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def exchange(agent: AgentProcess, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send `raw`, read until the agent closes the connection."""
    with connect(agent, timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered before reading it all; its answer is still there to read
        return read_all(sock)


def parse(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers with lower-case names, body) of the first response in `reply`."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return lines[0], headers, body


def assert_go_error(reply: bytes, status: str) -> None:
    """Go's answer to a request its server cannot read: `<status>` as status line and body."""
    line, headers, body = parse(reply)
    assert line == f"HTTP/1.1 {status}", reply[:300]
    assert body == status.encode(), reply[:300]
    for name, value in GO_ERROR_HEADERS.items():
        assert headers.get(name) == value, (name, reply[:300])
    assert b"bytearray" not in reply and b"Traceback" not in reply


def answering(agent: AgentProcess) -> None:
    assert agent.alive(), agent.log_tail()
    status, _, body = agent.get("/v1/status/leader", timeout=10)
    assert status == 200 and json.loads(body), body


def wait_closed(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Seconds until the agent closes `sock`, and what it sent before."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        data = read_all(sock)
    except TimeoutError:
        pytest.fail(f"connection still open after {timeout}s")
    return time.monotonic() - start, data


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent for the module, with short timeouts."""
    proc = AgentProcess(tmp_path_factory.mktemp("connections"), "-hcl", SHORT_TIMEOUTS, node="hostile-conns")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def log(short: AgentProcess) -> Iterator[Log]:
    """The log lines of one test, which must hold no traceback; the agent answers afterwards."""
    mark = Log(short)
    yield mark
    mark.assert_clean()
    answering(short)


# --------------------------------------------------------------------------------------------
# timeouts


def test_slow_loris_is_closed_after_the_header_timeout(short: AgentProcess, log: Log) -> None:
    """One header byte every 0.2 s: still a head after 2 s, so the connection is closed, unanswered."""
    head = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sock = connect(short)
    start = time.monotonic()
    closed_after = None
    try:
        for byte in head:
            sock.send(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - start > HEADER_TIMEOUT_S + 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed_after = time.monotonic() - start
    if closed_after is None:
        _, data = wait_closed(sock, 5)
        closed_after = time.monotonic() - start
        assert data == b""
    sock.close()
    assert HEADER_TIMEOUT_S - 0.3 <= closed_after <= HEADER_TIMEOUT_S + 3, closed_after
    wait_until(lambda: "request head not received within 2s" in log.text(), what="the timeout logged")


def test_silent_connection_is_closed_after_the_header_timeout(short: AgentProcess, log: Log) -> None:
    with connect(short) as sock:
        elapsed, data = wait_closed(sock, HEADER_TIMEOUT_S + 5)
    assert data == b"" and HEADER_TIMEOUT_S - 0.3 <= elapsed <= HEADER_TIMEOUT_S + 3, elapsed


def test_slow_body_is_closed_after_the_read_timeout(short: AgentProcess, log: Log) -> None:
    with connect(short) as sock:
        sock.sendall(b"PUT /v1/kv/slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        elapsed, data = wait_closed(sock, READ_TIMEOUT_S + 5)
    assert data == b"" and READ_TIMEOUT_S - 0.3 <= elapsed <= READ_TIMEOUT_S + 3, elapsed
    assert short.get("/v1/kv/slow-body")[0] == 404  # nothing half-written
    wait_until(lambda: "request body not received within 3s" in log.text(), what="the timeout logged")


def test_idle_keep_alive_is_closed_after_the_idle_timeout(short: AgentProcess, log: Log) -> None:
    request = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(short) as sock:
        for _ in range(3):  # in use more often than the timeouts: stays open
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            time.sleep(IDLE_TIMEOUT_S / 2)
        elapsed, data = wait_closed(sock, IDLE_TIMEOUT_S + 5)
    assert data == b"" and IDLE_TIMEOUT_S / 2 - 0.5 <= elapsed <= IDLE_TIMEOUT_S / 2 + 3, elapsed


def test_a_parked_blocking_query_outlives_every_timeout(short: AgentProcess, log: Log) -> None:
    """A connection serving a request is not timed: a 6 s blocking query gets its answer."""
    status, headers, _ = short.get("/v1/kv/parked/?recurse")
    index = headers["X-Consul-Index"]
    with connect(short, timeout=20) as sock:
        start = time.monotonic()
        sock.sendall(f"GET /v1/kv/parked/?recurse&index={index}&wait=6s HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = sock.recv(65536)
        elapsed = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 404") and elapsed >= 5.5, (elapsed, reply[:100])


def test_slow_connections_do_not_lock_a_client_out(short: AgentProcess, log: Log) -> None:
    """250 slow-loris connections from this process (the per-client limit is 200): a normal
    client from the same address is served after the header timeout, and even before it once
    the slow ones have waited a second (the one that waited longest makes room)."""
    slow: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for sock in list(slow):
                try:
                    sock.send(b"a")
                except OSError:
                    pass
            stop.wait(0.3)

    try:
        for _ in range(250):
            sock = connect(short)
            sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(1.3)
        # at the limit, and every slow connection has waited more than a second: room is made
        status, _, body = short.get("/v1/status/leader", timeout=5)
        assert status == 200, body
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        for _ in range(5):
            status, _, body = short.get("/v1/status/leader", timeout=5)
            assert status == 200, body
        # the slow ones were closed, unanswered
        still_open = 0
        for sock in slow:
            sock.settimeout(0.05)
            try:
                data = sock.recv(65536)
                assert data == b"" or data.startswith(b"HTTP/1.1 429"), data[:100]
            except TimeoutError:
                still_open += 1
            except ConnectionResetError:
                pass
        assert still_open == 0
    finally:
        stop.set()
        for sock in slow:
            sock.close()


# --------------------------------------------------------------------------------------------
# sizes


def test_a_100_kb_kv_key_a_long_tag_list_and_a_20_kb_filter_are_read(short: AgentProcess, log: Log) -> None:
    key = "big/" + "k" * 100_000
    status, _, body = http("PUT", f"{short.url}/v1/kv/{key}", b"value")
    assert (status, body.strip()) == (200, b"true"), body[:200]
    status, _, body = short.get(f"/v1/kv/{key}?raw")
    assert (status, body) == (200, b"value")
    status, _, body = short.get("/v1/kv/big/?keys")
    assert status == 200 and json.loads(body) == [key]

    tags = "&".join(f"tag=tag-{i:04d}-{'t' * 30}" for i in range(500))  # 22 KB of query
    status, _, body = short.get(f"/v1/catalog/service/consul?{tags}")
    assert (status, json.loads(body)) == (200, []), body[:300]

    # the request reaches the filter engine whole: what it makes of 20 KB is its own answer
    clauses = " and ".join(f'Node != "node-{i:02d}-{"x" * 1000}"' for i in range(20))
    expr = f"({clauses}) or Node == \"nobody\""
    assert len(expr) > 20_000
    status, _, body = short.get("/v1/catalog/nodes?" + urllib.parse.urlencode({"filter": expr}))
    if status == 200:
        assert [n["Node"] for n in json.loads(body)] == ["hostile-conns"]
    else:
        assert status == 400 and body.startswith(b"Failed to create boolean expression evaluator: "), body[:300]


def test_many_and_long_header_fields_are_accepted(short: AgentProcess, log: Log) -> None:
    fields = b"".join(b"X-Field-%d: value-%d\r\n" % (i, i) for i in range(1000))
    reply = exchange(short, b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:200]
    long_field = b"X-Long: " + b"v" * 60_000 + b"\r\n"
    head = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + long_field * 15 + b"Connection: close\r\n\r\n"
    reply = exchange(short, head)
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:200]  # 900 KB of head in all


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n",
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: " % i + b"b" * 50_000 + b"\r\n" for i in range(40)) + b"\r\n",
        b"GET /v1/kv/" + b"k" * (2 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5000)) + b"\r\n",
    ],
    ids=["2MB-field", "2MB-of-fields", "2MB-url", "5000-fields"],
)
def test_a_head_over_1_mib_gets_431(short: AgentProcess, log: Log, raw: bytes) -> None:
    assert_go_error(exchange(short, raw), "431 Request Header Fields Too Large")
    wait_until(lambda: "status=431" in log.text(), what="the refusal logged")


def test_a_head_over_1_mib_sent_slowly_gets_431(short: AgentProcess, log: Log) -> None:
    """The limit is on the head as a whole, however its bytes arrive."""
    with connect(short) as sock:
        sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n")
        for i in range(30):
            if select.select([sock], [], [], 0.02)[0]:
                break  # answered: stop sending
            sock.sendall(b"X-%d: " % i + b"c" * 50_000 + b"\r\n")
        else:
            pytest.fail("1.5 MB of head sent and no answer")
        assert i > 15  # nothing was refused before the limit
        assert_go_error(read_all(sock), "431 Request Header Fields Too Large")


# --------------------------------------------------------------------------------------------
# methods, versions, framing


def test_an_unknown_method_gets_405_from_the_router(short: AgentProcess, log: Log) -> None:
    """Go takes any token as a method; Consul's mux answers 405 with Allow (or 404 off its routes)."""
    line, headers, body = parse(exchange(short, b"FOO /v1/kv/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert line == "HTTP/1.1 405 Method Not Allowed"
    assert body == b"method FOO not allowed"
    assert set(headers["allow"].split(",")) == {"OPTIONS", "GET", "PUT", "DELETE"}

    garbage = b"GARBAGE /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    line, headers, body = parse(exchange(short, garbage))
    assert line == "HTTP/1.1 405 Method Not Allowed" and body == b"method GARBAGE not allowed"
    assert set(headers["allow"].split(",")) == {"OPTIONS", "GET"}

    line, _, body = parse(exchange(short, b"FOO /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert line == "HTTP/1.1 404 Not Found" and body == b"Invalid URL path: not a recognized HTTP API endpoint"

    # a method that is not a token at all: Go cannot read the request line
    assert_go_error(exchange(short, b"G@T /v1/kv/x HTTP/1.1\r\nHost: x\r\n\r\n"), "400 Bad Request")
    # a method split over packets is still read whole
    with connect(short) as sock:
        for part in (b"FO", b"O /v1/kv/x HT", b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            sock.sendall(part)
            time.sleep(0.1)
        line, _, body = parse(read_all(sock))
    assert line == "HTTP/1.1 405 Method Not Allowed" and body == b"method FOO not allowed"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/status/leader\r\n\r\n",
        b"GET /v1/status/leader HTTP/0.9\r\nHost: x\r\n\r\n",
        b"GET /v1/status/leader HTTP/2.0\r\nHost: x\r\n\r\n",
    ],
    ids=["http0.9-no-version", "http0.9", "http2.0"],
)
def test_request_lines_other_than_http_1_are_refused(short: AgentProcess, log: Log, raw: bytes) -> None:
    reply = exchange(short, raw)
    assert not reply.startswith(b"HTTP/0.9") and not reply.startswith(b"HTTP/2")
    assert_go_error(reply, "505 HTTP Version Not Supported: unsupported protocol version")


@pytest.mark.parametrize(
    "raw",
    [
        b"PUT /v1/kv/smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"PUT /v1/kv/smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"PUT /v1/kv/smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)),
        b"PUT /v1/kv/smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    ],
    ids=["CL+TE", "negative-CL", "two-CLs", "space-in-field-name", "TLS-hello", "bad-chunk-size"],
)
def test_malformed_heads_get_a_plain_400(short: AgentProcess, log: Log, raw: bytes) -> None:
    reply = exchange(short, raw)
    assert_go_error(reply, "400 Bad Request")
    assert short.get("/v1/kv/smuggle")[0] == 404
    wait_until(lambda: "refused request: from=127.0.0.1 status=400" in log.text(), what="the refusal logged")
    assert len([ln for ln in log.text().splitlines() if "refused request" in ln]) == 1  # one line, no more


def test_http_1_1_without_host_gets_gos_reason(short: AgentProcess, log: Log) -> None:
    reply = exchange(short, b"GET /v1/status/leader HTTP/1.1\r\n\r\n")
    assert_go_error(reply, "400 Bad Request: missing required Host header")
    # HTTP/1.0 needs no Host
    assert exchange(short, b"GET /v1/status/leader HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK")


def test_a_bad_chunk_after_the_head_gets_a_400_at_once(short: AgentProcess, log: Log) -> None:
    """The handler reading the body fails as soon as the bad chunk arrives (not at read_timeout)."""
    with connect(short) as sock:
        sock.sendall(b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.3)
        start = time.monotonic()
        sock.sendall(b"zz\r\n")
        line, headers, body = parse(read_all(sock))
        elapsed = time.monotonic() - start
    assert line == "HTTP/1.1 400 Bad Request" and body == b"400 Bad Request" and elapsed < 2, (line, elapsed)
    assert headers.get("connection") == "close"
    assert short.get("/v1/kv/chunked")[0] == 404


def test_unsupported_transfer_coding_gets_501(short: AgentProcess, log: Log) -> None:
    reply = exchange(short, b"PUT /v1/kv/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc")
    line, headers, body = parse(reply)
    assert line == "HTTP/1.1 501 Not Implemented" and body == b"Unsupported transfer encoding"
    assert headers.get("connection") == "close"


def test_a_flood_of_bad_requests_logs_one_line_each(short: AgentProcess, log: Log) -> None:
    for _ in range(50):
        reply = exchange(short, b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n")
        assert_go_error(reply, "431 Request Header Fields Too Large")
    wait_until(lambda: log.text().count("refused request") >= 50, what="50 refusals logged")
    lines = [ln for ln in log.text().splitlines() if "agent.http" in ln]
    assert len(lines) == 50 and all("refused request: from=127.0.0.1 status=431" in ln for ln in lines), lines[:5]


def test_a_keep_alive_connection_after_an_error_is_closed(short: AgentProcess, log: Log) -> None:
    """A good request, then garbage on the same connection: the first is answered, then Go's 400."""
    with connect(short) as sock:
        sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert_go_error(read_all(sock), "400 Bad Request")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nBad\x01Header: secret-token\r\n\r\n",
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Token: secret-token\x00\r\n\r\n",
        b"GET /v1/status/secret-token\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Token: " + b"secret-token" * 6000 + b"\r\n\r\n",
    ],
    ids=["bad-name", "nul-in-value", "control-in-path", "field-too-long"],
)
def test_logs_name_the_client_and_hold_no_client_bytes(short: AgentProcess, log: Log, raw: bytes) -> None:
    reply = exchange(short, raw)
    assert b"secret-token" not in reply
    wait_until(lambda: "refused request" in log.text(), what="the refusal logged")
    line = next(ln for ln in log.text().splitlines() if "refused request" in ln)
    assert "from=127.0.0.1" in line and "secret" not in line, line


def test_default_timeouts_leave_normal_clients_alone(agent: AgentProcess) -> None:
    """With the defaults (30 s head, 5 m request, 5 m idle), a keep-alive connection that pauses a
    few seconds between requests, and a request sent in pieces, are served."""
    with connect(agent) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            time.sleep(2.5)
        for part in (b"PUT /v1/kv/pieces HTTP/1.1\r\n", b"Host: x\r\nContent-Length: 4\r\n\r\n", b"ab", b"cd"):
            sock.sendall(part)
            time.sleep(1)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert agent.get("/v1/kv/pieces?raw")[2] == b"abcd"
    assert "Traceback" not in Path(agent.log_path).read_text()


# --------------------------------------------------------------------------------------------
# the answer on the wire (appliance/http/wire.py)


def read_answers(sock: socket.socket, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """`count` whole answers from a kept-alive connection, each cut at its Content-Length."""
    data, answers = b"", []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            line, headers, _ = parse(data)
            end = head_end + 4 + int(headers["content-length"])
            if len(data) >= end:
                answers.append((line, headers, data[head_end + 4:end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
    return answers


def test_an_answer_carries_length_and_date_and_no_server_header(short: AgentProcess, log: Log) -> None:
    """As Go's net/http writes it: Content-Length, Date, the handler's headers; no `Server:`."""
    with connect(short) as sock:
        sock.sendall(b"GET /v1/catalog/nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        [(line, headers, body)] = read_answers(sock, 1)
    assert line == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    assert headers["date"].endswith(" GMT") and "x-consul-index" in headers
    assert "server" not in headers and "connection" not in headers
    assert json.loads(body)[0]["Node"] == "hostile-conns"


def test_pipelined_requests_are_answered_in_order_on_one_connection(short: AgentProcess, log: Log) -> None:
    with connect(short) as sock:
        sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /v1/no/such HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /v1/catalog/nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = read_answers(sock, 3)
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"]
    assert answers[1][2] == b"Invalid URL path: not a recognized HTTP API endpoint"
    assert answers[1][1]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("request_line", "extra", "status_line", "connection"),
    [
        ("HTTP/1.1", "Connection: close\r\n", "HTTP/1.1 200 OK", "close"),
        ("HTTP/1.0", "", "HTTP/1.0 200 OK", None),
    ],
    ids=["1.1-close", "1.0"],
)
def test_a_connection_not_kept_alive_is_closed_after_its_answer(
        short: AgentProcess, log: Log, request_line: str, extra: str, status_line: str, connection: str | None) -> None:
    reply = exchange(short, f"GET /v1/status/leader {request_line}\r\nHost: x\r\n{extra}\r\n".encode())
    line, headers, body = parse(reply)
    assert line == status_line and headers.get("connection") == connection
    assert json.loads(body)


def test_an_http_1_0_keep_alive_client_keeps_its_connection(short: AgentProcess, log: Log) -> None:
    with connect(short) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v1/status/leader HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            [(line, headers, _)] = read_answers(sock, 1)
            assert line == "HTTP/1.0 200 OK" and headers["connection"] == "keep-alive"


def test_a_head_request_gets_no_body(short: AgentProcess, log: Log) -> None:
    """HEAD is not a method of Consul's GET routes: 405 with `Allow` and the length of its text, but
    no body on the wire (the next answer on the connection follows the head directly)."""
    with connect(short) as sock:
        sock.sendall(b"HEAD /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not (data.count(b"HTTP/1.1 ") == 2 and data.endswith(b'"\n')):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    first, second = data.split(b"HTTP/1.1 200 OK")
    line, headers, _ = parse(first)
    assert line == "HTTP/1.1 405 Method Not Allowed" and first.endswith(b"\r\n\r\n"), first
    assert headers["allow"] == "OPTIONS,GET" and headers["content-length"] == str(len("method HEAD not allowed"))
