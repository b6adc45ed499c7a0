"""Hostile filters against a real agent with a large catalog: nothing stalls the event loop.

`filter=` regexes used to run on Python's backtracking `re`: `ID matches "^(.|.){0,25}Z"` held
the agent for seconds per node and `^(.|.)*Z` never returned (only SIGKILL stopped it), and the
user-event `node`/`service`/`tag` regexes did the same. Here a real `cairn agent -dev` holds
10,000 nodes (each with a `web` instance and its check), loaded the way an operator restores
a snapshot: the register commands the HTTP API builds, applied by the project's own FSM and
snapshot code, sent to `PUT /v1/snapshot` (one Raft entry instead of 10,000).

While pathological filters and events are sent, another client times `GET /v1/status/leader`
over a kept-alive connection. The design target is no single request holding the loop for more
than 100 ms (see docs/http-api.md, Filtering); the assertion is a generous 1 s, for a noisy
shared 2-core CI machine. The observed figures are printed (`pytest -s`).
"""

from __future__ import annotations

import http.client as httpclient
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import AgentProcess, http, wait_until

from appliance.http.handlers.catalog import register_command
from appliance.raft.archive import build_archive
from appliance.state.fsm import FSM
from appliance.state.snapshot import snapshot
from appliance.state.store import Store

NODES = 10_000
MAX_LEADER_LATENCY_S = 1.0  # the design target is 0.1 s; CI machines are shared and small


def catalog_archive(count: int) -> bytes:
    """A snapshot archive of `count` nodes, each with one `web` instance and its passing check."""
    store = Store()
    fsm = FSM(store)
    for i in range(count):
        body = {
            "Node": f"node-{i:05d}", "ID": str(uuid.UUID(int=i + 1)),
            "Address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "NodeMeta": {"rack": f"r{i % 40}", "env": "production"},
            "Service": {"ID": f"web-{i}", "Service": "web", "Port": 8080, "Tags": ["v1", f"shard-{i % 16}"],
                        "Meta": {"version": "1.2.3"}},
            "Check": {"CheckID": f"web-{i}-alive", "Name": "web alive", "Status": "passing", "ServiceID": f"web-{i}",
                      "Output": "HTTP GET http://127.0.0.1:8080/health: 200 OK"},
        }
        applied = fsm.apply(i + 1, register_command(body, "dc1"))
        assert applied.result is True, applied.result
    configuration = {"Servers": [], "Index": 0}
    return build_archive(snapshot(store), index=count, term=1, configuration=configuration,
                         now_ms=int(time.time() * 1000))


class LeaderProbe:
    """A thread timing GET /v1/status/leader back to back on one kept-alive connection."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.latencies: list[float] = []
        self.started: list[float] = []  # perf_counter() at each probe's start
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-probe", daemon=True)

    def _run(self) -> None:
        conn = httpclient.HTTPConnection("127.0.0.1", self.agent.http_port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/v1/status/leader")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self.errors.append(f"HTTP {resp.status}")
            except (OSError, httpclient.HTTPException) as err:
                self.errors.append(repr(err))
                conn.close()
                conn = httpclient.HTTPConnection("127.0.0.1", self.agent.http_port, timeout=30)
            self.started.append(started)
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
        conn.close()

    def __enter__(self) -> LeaderProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(60)

    def worst_between(self, start: float, end: float) -> float:
        """The slowest probe that overlapped [start, end], in seconds."""
        return max((lat for s, lat in zip(self.started, self.latencies) if s <= end and s + lat >= start),
                   default=0.0)

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        return (f"{len(ordered)} probes: median {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, "
                f"max {ordered[-1] * 1000:.1f} ms")


@pytest.fixture
def big_agent(agent: AgentProcess) -> Iterator[AgentProcess]:
    archive = catalog_archive(NODES)
    status, _, body = http("PUT", agent.url + "/v1/snapshot", archive, timeout=60)
    assert status == 200, body
    status, _, body = agent.get("/v1/catalog/nodes", timeout=60)
    assert status == 200
    assert len(json.loads(body)) >= NODES
    yield agent


def get(agent: AgentProcess, path: str, **params: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    status, _, body = agent.get(path + "?" + urllib.parse.urlencode(params), timeout=120)
    return status, body, time.perf_counter() - started


HOSTILE_FILTERS = [
    ("/v1/catalog/nodes", 'ID matches "^(.|.){0,25}Z"'),
    ("/v1/catalog/nodes", 'ID matches "^(.|.)*Z"'),
    ("/v1/health/service/web", 'Node.ID matches "^(.|.)*Z" or Service.ID matches "^(.|.){0,25}Z"'),
    ("/v1/health/service/web", " or ".join(f'Checks.Output matches "^(.|.)*Z{i}"' for i in range(32))),
    ("/v1/catalog/service/web", 'ServiceID matches "^(a|aa)*$" or Node matches "(x+x+)+y"'),
    ("/v1/health/state/any", 'Output matches "^(.|.)*Z"'),
]
HOSTILE_EVENTS = [
    {"node": "^(.|.){0,25}Z"},
    {"node": "^(.|.)*Z"},
    {"service": "^(.|.)*Z", "tag": "^(.|.){0,25}Z"},
]


def test_hostile_regexes_leave_the_agent_responsive(big_agent: AgentProcess) -> None:
    agent = big_agent
    timings = []
    with LeaderProbe(agent) as probe:
        time.sleep(0.3)
        windows = []
        for path, expr in HOSTILE_FILTERS:
            status, body, took = get(agent, path, filter=expr)
            windows.append((f"{path} filter={expr[:48]!r}", time.perf_counter() - took, took))
            assert status == 200, (path, expr, body[:300])
            assert json.loads(body) == [], (path, expr)
        for params in HOSTILE_EVENTS:
            started = time.perf_counter()
            status, _, body = http("PUT", agent.url + "/v1/event/fire/probe?" + urllib.parse.urlencode(params))
            windows.append((f"PUT /v1/event/fire/probe {params}", started, time.perf_counter() - started))
            assert status == 200, body
        time.sleep(0.3)
    for what, start, took in windows:
        timings.append(f"{what}: answered in {took * 1000:.0f} ms, slowest status/leader meanwhile "
                       f"{probe.worst_between(start, start + took) * 1000:.0f} ms")
    print("\n" + "\n".join(timings) + "\nstatus/leader while they ran: " + probe.summary())
    assert not probe.errors, probe.errors[:5]
    assert len(probe.latencies) > 20
    assert max(probe.latencies) < MAX_LEADER_LATENCY_S, probe.summary()
    # none of those events was for this agent; one whose (backtracking-prone) filter matches its
    # node name is delivered, kept and listed
    fire = "/v1/event/fire/mine?" + urllib.parse.urlencode({"node": "^test-(.|.)*e$"})
    status, _, body = http("PUT", agent.url + fire)
    assert status == 200, body
    wait_until(lambda: [e["Name"] for e in agent.get_json("/v1/event/list")[2]] == ["mine"], timeout=10,
               what="the matching event in /v1/event/list")


def test_bad_regexes_are_refused_with_go_texts(agent: AgentProcess) -> None:
    status, _, body = agent.get("/v1/catalog/nodes?" + urllib.parse.urlencode({"filter": 'Node matches "(?<n>x)"'}))
    assert status == 400
    assert body.decode() == ('Failed to create boolean expression evaluator: Failed to compile regular expression '
                             '"(?<n>x)": error parsing regexp: invalid or unsupported Perl syntax: `(?<`')
    status, _, body = http("PUT", agent.url + "/v1/event/fire/x?node=a%5CC")  # node=a\C
    assert status == 500
    assert body.decode() == "Invalid node filter: error parsing regexp: invalid escape sequence: `\\C`"


def test_index_is_parsed_as_go_does(agent: AgentProcess) -> None:
    # strconv.ParseUint(s, 10, 64): Python's int() would take " 5", "+5", "1_000" and "٥"
    for query in ("index=%205", "index=5%20", "index=-1", "index=abc", "index=%2B5", "index=1_000",
                  "index=%D9%A5", "index=1.5", "index=18446744073709551616"):
        status, _, body = agent.get("/v1/catalog/nodes?" + query)
        assert (status, body) == (400, b"Invalid index"), query
    for query in ("index=", "index", "index=0", "index=18446744073709551615&wait=10ms"):
        status, _, body = agent.get("/v1/catalog/nodes?" + query)
        assert status == 200, (query, body)
    # Consul's parseWait reads wait before index
    status, _, body = agent.get("/v1/catalog/nodes?index=abc&wait=10")
    assert (status, body) == (400, b"Invalid wait time")
