"""The gossip core's public read-only view (`GossipCore.view()`, `Serf.view()`) and the rule that
the driver, metrics and the WAN pool read gossip through it, never through the core's or Serf's
attributes."""

from __future__ import annotations

import ast
import dataclasses
import random
from pathlib import Path

import pytest

from appliance.gossip.config import GossipConfig
from appliance.gossip.core import GossipCore
from appliance.gossip.messages import Suspect, encode_message, encode_packet
from appliance.gossip.outputs import Send
from appliance.gossip.serf import Serf

ROOT = Path(__file__).resolve().parents[2]
READERS = ("appliance/gossip/driver.py", "appliance/telemetry/gossip.py", "appliance/federation/pool.py")
# What a reader may call on a Serf instance: its driver API and the view (no attributes).
SERF_API = {
    "tick", "next_deadline", "on_packet", "on_stream", "on_stream_reply", "take_outputs", "take_events",
    "join", "leave", "force_leave", "set_tags", "user_event", "member_list", "member", "tags", "state",
    "has_left", "view", "restore_clocks", "coordinate", "cached_coordinate", "take_logs", "is_shutdown", "query",
    "respond", "register_internal_query",
}


def _pair(now: float = 0.0) -> tuple[GossipCore, GossipCore]:
    cfg = GossipConfig.lan()
    a = GossipCore("a", "127.0.0.1", 7946, cfg, random.Random(1), now)
    b = GossipCore("b", "127.0.0.2", 7946, cfg, random.Random(2), now)
    for token in a.join([("127.0.0.2", 7946)], now):
        (req,) = [o for o in a.take_outputs() if not isinstance(o, Send)]
        a.on_stream_reply(token, b.on_stream(("127.0.0.1", 7946), req.data, now), now)
    return a, b


def test_core_view_is_a_frozen_snapshot():
    a, _ = _pair()
    view = a.view()
    assert (view.name, view.incarnation, view.health_score, view.members, view.suspected) == ("a", 1, 0, 2, 0)
    assert view.broadcast_queue == len(a.broadcasts)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.incarnation = 5  # type: ignore[misc]
    a.on_packet(("127.0.0.2", 7946), b"garbage", 0.1)
    assert view.stats.get("decode_errors", 0) == 0 and a.view().stats["decode_errors"] == 1  # a copy


def test_core_view_shows_the_probe_and_suspicions():
    a, _ = _pair()
    a.tick(5.0)  # the first probe is due within one probe interval
    first = a.view()
    assert first.probe_target == "b" and first.probe_seq is not None
    a.tick(7.0)  # nobody answered: b is suspect, and the next probe (of the suspect) is under way
    view = a.view()
    assert view.suspected == 1 and view.health_score >= 1 and view.stats["probes_failed"] == 1
    assert view.probe_target == "b" and view.probe_seq != first.probe_seq


def test_refutation_shows_in_the_view():
    a, _ = _pair()
    a.on_packet(("127.0.0.2", 7946), encode_packet([encode_message(Suspect(1, "a", "b"))]), 1.0)
    view = a.view()
    assert view.incarnation == 2 and view.stats["refutes"] == 1 and view.health_score == 1


def test_serf_view_counts_members_queues_and_clocks():
    serf = Serf("a", "127.0.0.1", 7946, GossipConfig.lan(), random.Random(3), 0.0, tags={"role": "node"})
    view = serf.view()
    assert (view.members, view.intent_queue, view.event_queue, view.flaps) == (1, 0, 0, 0)
    assert view.core.name == "a" and view.health_score == view.core.health_score
    serf.user_event("deploy", b"x", False, 1.0)
    after = serf.view()
    assert after.event_queue == 1 and after.event_time == view.event_time + 1
    serf.restore_clocks(40, 60)
    assert serf.view().member_time >= 41 and serf.view().event_time >= 61


def _serf_reads(path: Path) -> list[str]:
    """`x.serf.<attr>` / `serf.<attr>` reads outside SERF_API (the core among them), and getattr calls."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            bad.append(f"{path.name}:{node.lineno}: getattr")
        if not isinstance(node, ast.Attribute):
            continue
        if _is_serf(node.value) and node.attr not in SERF_API:  # serf.core, serf._x, serf.intents ...
            bad.append(f"{path.name}:{node.lineno}: serf.{node.attr}")
    return bad


def _is_serf(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "serf"
    return isinstance(node, ast.Attribute) and node.attr == "serf"


@pytest.mark.parametrize("rel", READERS)
def test_readers_use_the_public_view(rel):
    # The issue that split the core: the driver read `serf.core.stats[...]` and probed the core's
    # privates; the driver, metrics and the WAN pool read the views and the driver API only.
    assert _serf_reads(ROOT / rel) == []
