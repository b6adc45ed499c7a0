"""The agent's user-event book (appliance/events.py) and coordinate glue (appliance/coordinates.py).

Rules: Consul's agent/user_event.go (validation texts, filters, the 256-event ring, `_rexec`),
agent/event_endpoint.go (uuidToUint64), agent/consul/coordinate_endpoint.go (batch limits, texts),
lib.RateScaledInterval (coordinate send interval).
"""

from __future__ import annotations

import asyncio
import itertools
import random

import msgpack
import pytest

from appliance.coordinates import (
    COORDINATE_UPDATE_BATCH_SIZE,
    CoordinateBatcher,
    CoordinateUpdateError,
    send_coordinates,
    send_interval_s,
    sort_near,
    validate_update,
)
from appliance.events import EVENT_PREFIX, RING_SIZE, AgentEvents, EventError, UserEventRecord, uuid_to_index
from appliance.gossip import GossipConfig, Serf
from appliance.gossip.coordinate import Coordinate
from appliance.state.fsm import FSM
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store


class Sink:
    """Stands in for the gossip pool's user_event: records what was fired and echoes it back."""

    def __init__(self, book: AgentEvents) -> None:
        self.book = book
        self.ltime = itertools.count(1)
        self.fired: list[tuple[str, bytes]] = []

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> int:
        self.fired.append((name, payload))
        lt = next(self.ltime)
        self.book.deliver(name, payload, lt)
        return lt


def _book(services=(("web", ["blue", "v2"]),), node="node-1") -> AgentEvents:
    ids = (f"00000000-0000-0000-0000-{i:012x}" for i in itertools.count(1))
    book = AgentEvents(node, lambda: list(services), new_id=lambda: next(ids))
    book.sink = Sink(book)
    return book


def test_fire_encodes_consul_record_under_the_prefix():
    book = _book()
    rec = book.fire("deploy", b"v1", node="^node-")
    name, payload = book.sink.fired[0]
    assert name == EVENT_PREFIX + "deploy"
    assert msgpack.unpackb(payload) == {"ID": rec.id, "n": "deploy", "p": b"v1", "nf": "^node-", "v": 1}
    assert rec.to_json()["LTime"] == 0
    assert [(e.name, e.ltime) for e in book.list()] == [("deploy", 1)]


@pytest.mark.parametrize("kwargs, text", [
    (dict(name=""), "User event missing name"),
    (dict(name="x", tag="a"), "Cannot provide tag filter without service filter"),
    (dict(name="x", node="("), "Invalid node filter: "),
    (dict(name="x", service="[", tag="a"), "Invalid service filter: "),
    (dict(name="x", service="a", tag="("), "Invalid tag filter: "),
])
def test_validation_texts(kwargs, text):
    with pytest.raises(EventError, match="^" + text.replace("(", r"\(").replace("[", r"\[")):
        _book().fire(**kwargs)


def test_filters_decide_what_this_agent_keeps():
    book = _book()
    book.fire("a", node="^node-1$")
    book.fire("b", node="other")
    book.fire("c", service="we", tag="^blue$")
    book.fire("d", service="web", tag="red")
    book.fire("e", service="db")
    book.fire("_rexec")  # remote exec is never kept (it goes to on_remote_exec: appliance/rexec.py)
    assert [e.name for e in book.list()] == ["a", "c"]
    assert book.filtered == 4


def test_ring_keeps_the_last_256_in_delivery_order_and_index():
    book = _book()
    for i in range(RING_SIZE + 10):
        book.fire(f"e{i}")
    events = book.list()
    assert len(events) == RING_SIZE
    assert events[0].name == "e10" and events[-1].name == f"e{RING_SIZE + 9}"
    assert book.index(events) == uuid_to_index(events[-1].id)
    assert book.index([]) == 1
    assert uuid_to_index("00000000-0000-0001-0000-000000000003") == 1 ^ 3


def test_garbage_and_foreign_events_are_dropped():
    book = _book()
    assert book.deliver("other:event", b"\x80", 1) is None  # not ours: not even decoded
    for junk in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"ID": "short", "n": "x"}),
                 msgpack.packb({"ID": "0" * 36, "n": 5})):
        assert book.deliver(EVENT_PREFIX + "x", junk, 1) is None
    assert book.decode_errors == 4 and book.list() == []
    good = UserEventRecord("1" * 8 + "-" + "2" * 4 + "-" + "3" * 4 + "-" + "4" * 4 + "-" + "5" * 12, "ok")
    assert UserEventRecord.decode(good.encode()) == good


def test_events_through_a_serf_member_and_its_size_limit():
    # The book on a real (sans-IO) Serf member: what Serf delivers locally lands in the ring, and
    # Serf's size limit (name + encoded record <= 512 bytes) comes back as Consul's 500 text.
    serf = Serf("node-1", "10.0.0.1", 7946, GossipConfig.lan(), random.Random(1), 0.0)

    class Pool:  # the slice of GossipDriver the book uses
        def user_event(self, name, payload, coalesce):
            return serf.user_event(name, payload, coalesce, 0.0)

        def subscribe(self, callback):
            self.callback = callback

    book = _book()
    pool = Pool()
    book.attach(pool)
    book.fire("deploy", b"v1")
    for ev in serf.take_events():
        pool.callback(ev, None)
    assert [(e.name, e.payload, e.ltime) for e in book.list()] == [("deploy", b"v1", 1)]
    with pytest.raises(EventError, match="^user event exceeds configured limit of 512 bytes before encoding$"):
        book.fire("big", b"x" * 450)  # the encoded record (ID, keys) pushes it over


# ---------------------------------------------------------------------------------- coordinates


def test_send_interval_scales_with_members():
    # Consul: max(sync_coordinate_interval_min 15 s, members / 64 per second)
    assert send_interval_s(1) == 15.0
    assert send_interval_s(960) == 15.0
    assert send_interval_s(6400) == 100.0


def test_send_loop_submits_our_coordinate_every_interval():
    # Consul's sendCoordinate: interval + a stagger of up to one interval, our node, segment "".
    batcher = CoordinateBatcher(lambda cmd: None)
    coord = Coordinate.origin()
    coord.vec[2] = 0.003

    async def main():
        task = asyncio.ensure_future(send_coordinates(lambda: "me", lambda: coord, lambda: 3, batcher,
                                                      random.Random(1), interval_min_s=0.02))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(main())
    assert batcher.pending == {"me:": ({"Node": "me", "Segment": "", "Coord": coord.to_json()}, "")}


def test_validate_update_texts():
    ok = validate_update({"Node": "a", "Coord": Coordinate.origin().to_json()})
    assert ok["Segment"] == "" and ok["Coord"]["Height"] == 1e-5
    with pytest.raises(CoordinateUpdateError, match="^incompatible coordinate$"):
        validate_update({"Node": "a", "Coord": {"Vec": [0.0] * 4, "Error": 1.5, "Adjustment": 0, "Height": 0}})
    for bad in ({"Node": "a"}, {"Node": "a", "Coord": {"Vec": [float("nan")] * 8}}, {"Node": "a", "Coord": 3}):
        with pytest.raises(CoordinateUpdateError, match="^invalid coordinate$"):
            validate_update(bad)
    # a body of the wrong shape never gets here: it is refused when decoded (tests/unit/test_gojson.py)


def test_batcher_keeps_latest_per_node_and_limits_each_period():
    proposed = []

    async def propose(cmd):
        proposed.append(cmd)

    b = CoordinateBatcher(propose)
    b.submit({"Node": "a", "Segment": "", "Coord": {"x": 1}})
    b.submit({"Node": "a", "Segment": "", "Coord": {"x": 2}})
    assert asyncio.run(b.flush()) == 1
    assert proposed[0]["Updates"] == [{"Node": "a", "Segment": "", "Coord": {"x": 2}}]
    proposed.clear()
    for i in range(700):
        b.submit({"Node": f"n{i}", "Segment": "", "Coord": {}})
    assert asyncio.run(b.flush()) == 640
    assert [len(c["Updates"]) for c in proposed] == [COORDINATE_UPDATE_BATCH_SIZE] * 5
    assert b.discarded == 60 and b.pending == {}


def _store_with(coords: dict[str, float | None]) -> Store:
    store = Store()
    fsm = FSM(store)
    index = itertools.count(1)
    for name in coords:
        fsm.apply(next(index), {"Type": "register", "Node": name, "Address": "10.0.0.1"})
    updates = []
    for name, x in coords.items():
        if x is not None:
            c = Coordinate.origin()
            c.vec[0] = x
            updates.append({"Node": name, "Segment": "", "Coord": c.to_json()})
    updates.append({"Node": "ghost", "Segment": "", "Coord": Coordinate.origin().to_json()})
    applied = fsm.apply(next(index), {"Type": "coordinate_batch_update", "Updates": updates})
    assert "coordinates" in applied.touched
    return store


def test_fsm_stores_coordinates_drops_unknown_nodes_and_snapshots_them():
    store = _store_with({"a": 0.0, "b": 0.01, "c": None})
    assert [r["Node"] for r in store.all_coordinates()] == ["a", "b"]
    copy = restore(snapshot(store))
    assert copy.all_coordinates() == store.all_coordinates()
    FSM(store).apply(100, {"Type": "deregister", "Node": "b"})
    assert [r["Node"] for r in store.all_coordinates()] == ["a"]
    assert store.index_of("coordinates") == 100


def test_sort_near_orders_by_rtt_with_unknown_last():
    store = _store_with({"a": 0.0, "b": 0.030, "c": None, "d": 0.010})
    nodes = ["a", "b", "c", "d"]
    assert sort_near(store, nodes, "b", "a", str) == ["b", "d", "a", "c"]
    assert sort_near(store, nodes, "_agent", "a", str) == ["a", "d", "b", "c"]
    assert sort_near(store, nodes, "c", "a", str) == nodes  # source without a coordinate: unchanged
    assert sort_near(store, nodes, "nope", "a", str) == nodes
