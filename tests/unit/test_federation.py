"""Cross-datacenter request frames (appliance/federation/forward.py): round trips and garbage."""

from __future__ import annotations

import msgpack
import pytest

from appliance.federation.forward import Answer, Exchange, decode_answer, decode_request
from appliance.federation.pool import consul_wan_config
from appliance.rpc.frames import HEADER


def body_of(data: bytes) -> list:
    version, length = HEADER.unpack(data[: HEADER.size])
    assert version == 1 and length == len(data) - HEADER.size
    return msgpack.unpackb(data[HEADER.size :], raw=False)


def test_request_round_trip():
    ex = Exchange("PUT", "/v1/kv/a%2Fb", [("cas", "3"), ("flags", "1")], [("X-Consul-Token", "t")], b"\x00value")
    dc, hops, back = decode_request(body_of(ex.encode("dc2", 1)))
    assert (dc, hops, back) == ("dc2", 1, ex)


@pytest.mark.parametrize("body", [
    "x", [], [9], [10, {}], [9, {"dc": "dc2", "method": "GET", "path": "v1/kv", "hops": 0}],  # not a path
    [9, {"dc": "dc2", "method": "GET", "path": "/v1/kv", "hops": 2}],  # a request may cross once
    [9, {"dc": "dc2", "method": "GET", "path": "/v1/kv", "hops": 0, "body": "text"}],
    [9, {"dc": "dc2", "method": "GET", "path": "/v1/kv", "hops": 0, "query": [["a"]]}],
    [9, {"dc": "dc2", "method": "GET", "path": "/v1/kv", "hops": True}],
])
def test_garbage_requests_are_refused(body):
    with pytest.raises(ValueError):
        decode_request(body)


def test_answer_codec_and_garbage():
    assert decode_answer([10, {"status": 200, "headers": [["X-Consul-Index", "7"]], "body": b"[]"}]) == Answer(
        200, [("X-Consul-Index", "7")], b"[]")
    for body in ([10, {"status": 99}], [10, {"status": "200"}], [9, {"status": 200}],
                 [10, {"status": 200, "body": 5}], [10, {"status": 200, "headers": {"a": "b"}}]):
        with pytest.raises(ValueError):
            decode_answer(body)
    assert Answer.error("No path to datacenter").status == 500


def test_wan_profile_is_consuls():
    # gossip-notes §10.4: memberlist's WAN profile, gossip_nodes 3 as Consul's defaults give it
    cfg = consul_wan_config()
    assert (cfg.probe_interval_s, cfg.probe_timeout_s, cfg.suspicion_mult, cfg.gossip_interval_s) == (5.0, 3.0, 6, 0.5)
    assert (cfg.gossip_nodes, cfg.push_pull_interval_s, cfg.reconnect_timeout_s) == (3, 60.0, 72 * 3600.0)
