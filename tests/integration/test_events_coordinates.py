"""User events and network coordinates through a real `cairn agent -dev` process.

Rules checked (reference/consul-api.md §3.8, §3.10, §4.7, §4.9; Consul's agent/event_endpoint.go,
agent/user_event.go, agent/coordinate_endpoint.go, command/event, command/rtt):

* `PUT /v1/event/fire/:name` answers the event (new UUID, base64 payload, Version 1, LTime 0);
  `/v1/event/list` shows it with its Lamport time, oldest first, `?name=` filters, and the
  `X-Consul-Index` is the XOR of the two halves of the last event's UUID;
* a blocking list parks while the index equals `?index=` and wakes on the next event;
* node/service/tag filters decide whether this agent keeps an event; Consul's error texts for a
  missing name, a tag filter without a service filter, a bad regexp and an oversized event;
* `cairn event` prints `Event ID: <uuid>` and Consul's flag errors;
* `PUT /v1/coordinate/update` reaches the catalog within one batch period; `/v1/coordinate/nodes`
  and `/node/:node` (404 for unknown) return it; invalid and incompatible coordinates are refused;
* `?near=<node>` and `?near=_agent` sort catalog and health answers by estimated RTT, nodes without
  a coordinate last; `cairn rtt` prints Consul's line with the Vivaldi estimate.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest

from appliance.events import uuid_to_index
from appliance.gossip.coordinate import Coordinate
from tests.conftest import http, http_json, wait_until

pytestmark = pytest.mark.timeout(120)


def _coord(x_ms: float, height_ms: float = 0.01) -> dict:
    c = Coordinate.origin()
    c.vec[0] = x_ms / 1000.0
    c.height = height_ms / 1000.0
    c.error = 0.2
    return c.to_json()


def test_fire_and_list_events(agent):
    status, _, event = http_json("PUT", agent.url + "/v1/event/fire/deploy", b"v1")
    assert status == 200
    assert uuid.UUID(event["ID"])
    assert event == {"ID": event["ID"], "Name": "deploy", "Payload": base64.b64encode(b"v1").decode(),
                     "NodeFilter": "", "ServiceFilter": "", "TagFilter": "", "Version": 1, "LTime": 0}
    status, _, empty = http_json("PUT", agent.url + "/v1/event/fire/restart")
    assert status == 200 and empty["Payload"] is None
    status, headers, events = http_json("GET", agent.url + "/v1/event/list")
    assert status == 200
    assert [e["Name"] for e in events] == ["deploy", "restart"]
    assert events[0]["ID"] == event["ID"] and events[0]["LTime"] >= 1
    assert events[1]["LTime"] > events[0]["LTime"]
    assert headers["X-Consul-Index"] == str(uuid_to_index(events[-1]["ID"]))
    status, headers, only = http_json("GET", agent.url + "/v1/event/list?name=deploy")
    assert [e["ID"] for e in only] == [event["ID"]]
    assert headers["X-Consul-Index"] == str(uuid_to_index(event["ID"]))
    status, headers, none = http_json("GET", agent.url + "/v1/event/list?name=nothing")
    assert none == [] and headers["X-Consul-Index"] == "1"


def test_blocking_event_list_wakes_on_the_next_event(agent):
    http("PUT", agent.url + "/v1/event/fire/first")
    _, headers, _ = http_json("GET", agent.url + "/v1/event/list")
    index = headers["X-Consul-Index"]
    timer = threading.Timer(0.5, lambda: http("PUT", agent.url + "/v1/event/fire/second"))
    timer.start()
    try:
        started = time.monotonic()
        _, headers, events = http_json("GET", agent.url + f"/v1/event/list?index={index}&wait=20s")
        took = time.monotonic() - started
    finally:
        timer.cancel()
    assert 0.3 < took < 10, took
    assert [e["Name"] for e in events] == ["first", "second"]
    assert headers["X-Consul-Index"] != index
    started = time.monotonic()
    _, headers2, _ = http_json("GET", agent.url + f"/v1/event/list?index={headers['X-Consul-Index']}&wait=1s")
    assert 0.9 < time.monotonic() - started < 5  # nothing new: waits out `wait`
    # Another index than the current one answers at once (the index is not monotonic).
    started = time.monotonic()
    http_json("GET", agent.url + "/v1/event/list?index=12345&wait=20s")
    assert time.monotonic() - started < 2


def test_event_filters_and_errors(agent):
    status, _, _ = http_json("PUT", agent.url + "/v1/agent/service/register",
                             {"Name": "web", "Tags": ["blue", "v2"], "Port": 80})
    assert status == 200
    fire = agent.url + "/v1/event/fire/"
    assert http("PUT", fire + "for-us?node=^test-")[0] == 200
    assert http("PUT", fire + "not-us?node=^other$")[0] == 200
    assert http("PUT", fire + "web-blue?service=^web$&tag=blu")[0] == 200
    assert http("PUT", fire + "web-red?service=^web$&tag=red")[0] == 200
    assert http("PUT", fire + "db?service=^db$")[0] == 200
    _, _, events = http_json("GET", agent.url + "/v1/event/list")
    assert [e["Name"] for e in events] == ["for-us", "web-blue"]
    assert events[1]["ServiceFilter"] == "^web$" and events[1]["TagFilter"] == "blu"

    assert http("PUT", agent.url + "/v1/event/fire/")[:3:2] == (400, b"Missing name")
    status, _, body = http("PUT", fire + "x?tag=blue")
    assert (status, body) == (500, b"Cannot provide tag filter without service filter")
    status, _, body = http("PUT", fire + "x?node=(")
    assert status == 500 and body.startswith(b"Invalid node filter: ")
    status, _, body = http("PUT", fire + "big", b"x" * 600)
    assert status == 500 and b"user event exceeds configured limit of 512 bytes" in body
    assert http("GET", fire + "x")[0] == 405


def test_event_cli(agent):
    result = agent.cli("event", "-name", "deploy", "payload-1")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("Event ID: ")
    event_id = line.removeprefix("Event ID: ")
    _, _, events = http_json("GET", agent.url + "/v1/event/list?name=deploy")
    assert [(e["ID"], base64.b64decode(e["Payload"])) for e in events] == [(event_id, b"payload-1")]
    for args, text in ((("event",), "Event name must be specified"),
                       (("event", "-name", "x", "-tag", "a"), "Cannot provide tag filter without service filter."),
                       (("event", "-name", "x", "-node", "("), "Failed to compile node filter regexp"),
                       (("event", "-name", "x", "a", "b"), "Too many command line arguments.")):
        result = agent.cli(*args)
        assert result.returncode == 1 and text in result.stderr, (args, result.stderr)


def _register(agent, node: str) -> None:
    status, _, _ = http_json("PUT", agent.url + "/v1/catalog/register",
                             {"Node": node, "Address": "10.0.0.1", "Service": {"Service": "api", "Port": 80}})
    assert status == 200


def _update(agent, node: str, coord: dict) -> None:
    status, _, body = http("PUT", agent.url + "/v1/coordinate/update", {"Node": node, "Segment": "", "Coord": coord})
    assert status == 200, body


def test_coordinate_endpoints_near_sorting_and_rtt(agent):
    for node in ("far", "near", "mid", "nocoord"):
        _register(agent, node)
    _update(agent, "test-node", _coord(0.0))
    _update(agent, "near", _coord(1.0))
    _update(agent, "mid", _coord(5.0))
    _update(agent, "far", _coord(20.0))
    _update(agent, "unknown-node", _coord(3.0))  # not in the catalog: dropped when the batch applies

    def stored():
        _, _, coords = http_json("GET", agent.url + "/v1/coordinate/nodes")
        return coords if isinstance(coords, list) and len(coords) == 4 else None

    coords = wait_until(stored, timeout=15, what="coordinates in the catalog")
    assert [c["Node"] for c in coords] == ["far", "mid", "near", "test-node"]
    assert coords[0] == {"Node": "far", "Segment": "", "Coord": _coord(20.0)}
    status, headers, one = http_json("GET", agent.url + "/v1/coordinate/node/near")
    assert status == 200 and one == [{"Node": "near", "Segment": "", "Coord": _coord(1.0)}]
    assert int(headers["X-Consul-Index"]) > 1
    assert http("GET", agent.url + "/v1/coordinate/node/nocoord")[0] == 404
    assert http_json("GET", agent.url + "/v1/coordinate/nodes?segment=other")[2] == []
    # a -dev server runs no WAN pool, so it lists its datacenter's servers with their catalog
    # coordinates. test-node's is the test's update or the agent's own periodic one (Vivaldi's
    # origin, error 1.5), whichever was batched last: compare with the catalog around the read.
    before = http_json("GET", agent.url + "/v1/coordinate/node/test-node")[2][0]["Coord"]
    _, _, dcs = http_json("GET", agent.url + "/v1/coordinate/datacenters")
    after = http_json("GET", agent.url + "/v1/coordinate/node/test-node")[2][0]["Coord"]
    assert before in (_coord(0.0), {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05})
    assert [(d["Datacenter"], d["AreaID"], [c["Node"] for c in d["Coordinates"]]) for d in dcs] == \
        [("dc1", "WAN", ["test-node"])]
    assert dcs[0]["Coordinates"][0]["Coord"] in (before, after)

    # Bad updates: Consul's texts.
    status, _, body = http("PUT", agent.url + "/v1/coordinate/update",
                           {"Node": "near", "Coord": {"Vec": [0.0] * 3, "Error": 1.5, "Adjustment": 0, "Height": 0}})
    assert (status, body) == (500, b"incompatible coordinate")
    status, _, body = http("PUT", agent.url + "/v1/coordinate/update", {"Node": "near", "Coord": {"Vec": "x"}})
    assert (status, body) == (400, b"Request decode failed: json: cannot unmarshal string into Go struct field "
                                   b"Coordinate.Coord.Vec of type []float64")
    assert http("PUT", agent.url + "/v1/coordinate/update", b"{not json")[0] == 400

    # ?near sorting: by estimated RTT from the source, nodes without a coordinate last.
    _, _, nodes = http_json("GET", agent.url + "/v1/catalog/nodes?near=far")
    assert [n["Node"] for n in nodes] == ["far", "mid", "near", "test-node", "nocoord"]
    _, _, nodes = http_json("GET", agent.url + "/v1/catalog/nodes?near=_agent")
    assert [n["Node"] for n in nodes] == ["test-node", "near", "mid", "far", "nocoord"]
    _, _, nodes = http_json("GET", agent.url + "/v1/catalog/nodes?near=nocoord")  # no source: name order
    assert [n["Node"] for n in nodes] == ["far", "mid", "near", "nocoord", "test-node"]
    _, _, instances = http_json("GET", agent.url + "/v1/catalog/service/api?near=mid")
    assert [s["Node"] for s in instances] == ["mid", "near", "far", "nocoord"]
    _, _, health = http_json("GET", agent.url + "/v1/health/service/api?near=near")
    assert [e["Node"]["Node"] for e in health] == ["near", "mid", "far", "nocoord"]

    # cairn rtt: Consul's line, the Vivaldi estimate between the stored coordinates.
    result = agent.cli("rtt", "near", "far")
    assert result.returncode == 0, result.stderr
    expected = Coordinate.from_json(_coord(1.0)).distance_to(Coordinate.from_json(_coord(20.0))) * 1000
    assert result.stdout.strip() == f"Estimated near <-> far rtt: {expected:.3f} ms (using LAN coordinates)"
    result = agent.cli("rtt", "mid")  # the second node defaults to the agent's
    assert result.stdout.strip().startswith("Estimated mid <-> test-node rtt: ")
    result = agent.cli("rtt", "nocoord", "far")
    assert result.returncode == 1 and 'Could not find a coordinate for node "nocoord"' in result.stderr
    result = agent.cli("rtt")
    assert result.returncode == 1 and "One or two node names must be specified" in result.stderr
    result = agent.cli("rtt", "-wan", "test-node.dc1")  # the servers' coordinates; the agent by default
    assert result.stdout.strip() == "Estimated test-node.dc1 <-> test-node.dc1 rtt: 0.020 ms (using WAN coordinates)"
    result = agent.cli("rtt", "-wan", "near", "far")
    assert result.returncode == 1
    assert "Node names must be specified as <node name>.<datacenter> with -wan" in result.stderr

    # A deregistered node's coordinate goes with it.
    assert http("PUT", agent.url + "/v1/catalog/deregister", {"Node": "far"})[0] == 200
    _, _, coords = http_json("GET", agent.url + "/v1/coordinate/nodes")
    assert [c["Node"] for c in coords] == ["mid", "near", "test-node"]


def test_agent_self_reports_the_lan_coordinate(agent):
    _, _, info = http_json("GET", agent.url + "/v1/agent/self")
    coord = info["Coord"]
    assert set(coord) == {"Vec", "Error", "Adjustment", "Height"} and len(coord["Vec"]) == 8
    assert json.loads(json.dumps(coord)) == coord


def test_events_and_coordinates_travel_over_gossip(agent_factory):
    # Two real agents in one LAN gossip pool: an event fired on one is delivered (through Serf's
    # event broadcast) to the other's /v1/event/list with the same ID and Lamport time; an event
    # filtered to the second node is kept there only; probes between them carry coordinates, so
    # each one's /v1/agent/self "Coord" leaves the origin (Serf ping delegate).
    a = agent_factory(node="alpha")
    b = agent_factory(node="beta")
    status, _, body = http("PUT", a.url + f"/v1/agent/join/127.0.0.1:{b.serf_lan_port}")
    assert status == 200, body

    def both_alive():
        _, _, members = http_json("GET", a.url + "/v1/agent/members")
        return isinstance(members, list) and sorted(m["Name"] for m in members if m["Status"] == 1) == ["alpha", "beta"]

    wait_until(both_alive, timeout=20, what="alpha and beta alive in alpha's members")
    status, _, fired = http_json("PUT", a.url + "/v1/event/fire/deploy", b"build-7")
    assert status == 200
    http("PUT", a.url + "/v1/event/fire/only-beta?node=^beta$")

    def beta_events():
        _, _, events = http_json("GET", b.url + "/v1/event/list")
        return events if isinstance(events, list) and len(events) == 2 else None

    events = wait_until(beta_events, timeout=15, what="both events at beta")
    events.sort(key=lambda e: e["LTime"])  # kept in delivery order; gossip does not order them
    assert [e["Name"] for e in events] == ["deploy", "only-beta"]
    assert events[0]["ID"] == fired["ID"] and base64.b64decode(events[0]["Payload"]) == b"build-7"
    _, _, at_alpha = http_json("GET", a.url + "/v1/event/list")
    assert [e["Name"] for e in at_alpha] == ["deploy"]
    assert at_alpha[0]["LTime"] == events[0]["LTime"]
    result = b.cli("event", "-name", "from-cli", "x")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: [e["Name"] for e in http_json("GET", a.url + "/v1/event/list?name=from-cli")[2]],
               timeout=15, what="the CLI's event at alpha")

    def moved():
        _, _, info = http_json("GET", a.url + "/v1/agent/self")
        return info["Coord"]["Error"] < 1.5 and info["Coord"]["Vec"] != [0.0] * 8

    wait_until(moved, timeout=30, interval=0.5, what="alpha's coordinate updated by probes of beta")
