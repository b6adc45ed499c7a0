"""The CGSB-like catalog of bench/scale, shared by the benchmark (run.py) and the scale tests
(tests/hostile/test_scale_bounds.py), built with the shipped state store and FSM (appliance.state).

Every node is registered with node meta and a node check (`serfHealth`), then every instance with
its node, two or three tags, service meta and one service check (every third instance a second
one). Each write is a `/v1/catalog/register` body turned into a command by the HTTP handler's own
decoder (`register_command`) and applied by the FSM at the next index. Instances are spread over
`instances / PER_SERVICE` service names (`svc-00000`, ...) and placed round-robin on the nodes
(`node-00000`, ...); every 50th instance's check is critical, the others pass.

KV keys (`kv_bodies`) are `app-<folder>/key-<nn>`, PER_FOLDER to a folder, so a `?keys&separator=/`
listing from the root has one entry per folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from appliance.http.handlers.catalog import register_command
from appliance.raft.archive import build_archive
from appliance.state.commands import encode_command
from appliance.state.fsm import FSM
from appliance.state.snapshot import snapshot
from appliance.state.store import Store

DATACENTER = "dc1"
PER_SERVICE = 20  # instances of each service name
PER_FOLDER = 20  # KV keys under each top-level folder
TAGS = ("primary", "secondary", "canary", "v1", "v2", "blue", "green", "edge")
TEAMS = ("payments", "search", "identity", "storage", "frontend")


def address(n: int) -> str:
    return f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"


def bodies(nodes: int, instances: int, *, gossip: bool = True, web: int = 0,
           per_service: int = PER_SERVICE) -> Iterator[dict[str, Any]]:
    """The /v1/catalog/register bodies: every node first, then every instance. The first `web`
    instances are instances of one service, `web` (`web-<i>`, one a node while there are nodes
    enough). Without `gossip` the catalog is one an external registrar writes: the node check is
    `node-health` rather than `serfHealth` (a leader deregisters nodes with `serfHealth` that are
    no gossip members of its pool, reconcile.py) and services have no address of their own (their
    node's applies), which keeps a snapshot of 100,000 instances with coordinates under the 63 MB a
    `PUT /v1/snapshot` takes. `per_service`: instances of each `svc-` name (10 gives 100,000
    instances 10,000 service names)."""
    node_check = ("serfHealth", "Serf Health Status") if gossip else ("node-health", "External node health")
    for n in range(nodes):
        yield {"Node": f"node-{n:05d}", "Address": address(n),
               "NodeMeta": {"rack": f"r{n % 40}", "zone": f"zone-{n % 3}"},
               "Check": {"CheckID": node_check[0], "Name": node_check[1], "Status": "passing"}}
    for i in range(instances):
        n = i % nodes
        name, sid = ("web", f"web-{i}") if i < web else (f"svc-{i // per_service:05d}", f"svc-{i // per_service:05d}-{i % per_service}")
        tags = [TAGS[i % 2], TAGS[2 + i % 3]] + ([TAGS[5 + i % 3]] if i % 2 else [])
        checks = [{"CheckID": f"service:{sid}", "Name": f"Service '{name}' check", "ServiceID": sid,
                   "Status": "passing" if i % 50 else "critical", "Output": "HTTP GET: 200 OK"}]
        if i % 3 == 0:
            checks.append({"CheckID": f"service:{sid}:2", "Name": "TCP", "ServiceID": sid, "Status": "passing"})
        service = {"Service": name, "ID": sid, "Tags": tags, "Port": 8000 + i % 1000, "Address": address(n),
                   "Meta": {"version": f"1.{i % 4}.0", "team": TEAMS[i % len(TEAMS)]}}
        if not gossip:
            del service["Address"]
        yield {"Node": f"node-{n:05d}", "Address": address(n),
               "NodeMeta": {"rack": f"r{n % 40}", "zone": f"zone-{n % 3}"}, "SkipNodeUpdate": True,
               "Service": service, "Checks": checks}


def coordinate(n: int) -> dict[str, Any]:
    """Node n's network coordinate: the nodes sit on a few rings, so distances differ."""
    ring, step = n % 7, n * 0.618034 % 1.0
    vec = [0.001 * (ring + 1) * step, 0.001 * (ring + 1) * (1 - step), 0.0005 * (n % 11) / 11, 0.0, 0.0, 0.0, 0.0, 0.0]
    return {"Vec": vec, "Error": 0.2, "Adjustment": 0.0, "Height": 0.00001 * (1 + n % 5)}


def kv_bodies(count: int) -> Iterator[tuple[str, bytes]]:
    """(key, value) of `count` KV entries, PER_FOLDER under each top-level folder."""
    for i in range(count):
        yield f"app-{i // PER_FOLDER:05d}/key-{i % PER_FOLDER:02d}", f"value {i}".encode()


def build(nodes: int, instances: int, kv: int = 0, *, encoded: bool = True, gossip: bool = True, web: int = 0,
          coordinates: bool = False) -> Store:
    """The catalog (and `kv` KV entries) in a new store. `encoded`: each command goes through the
    log entry codec as a follower applies it (as the benchmark measures); without it the FSM
    applies the commands as the leader does its own, which is quicker to build. `gossip`, `web`:
    as in `bodies`. `coordinates`: every node gets a network coordinate (for `?near=`)."""
    store = Store()
    fsm = FSM(store)
    commands: Iterator[dict[str, Any]] = (register_command(body, DATACENTER)
                                          for body in bodies(nodes, instances, gossip=gossip, web=web))
    index = 0
    for index, command in enumerate(commands, start=1):
        applied = fsm.apply_entry(index, encode_command(command)) if encoded else fsm.apply(index, command)
        if applied.result is not True:
            raise ValueError(f"register failed at index {index}: {applied.result}")
    if coordinates:
        for start in range(0, nodes, 1000):
            updates = [{"Node": f"node-{n:05d}", "Coord": coordinate(n)} for n in range(start, min(nodes, start + 1000))]
            index += 1
            fsm.apply(index, {"Type": "coordinate_batch_update", "Updates": updates})
    first_kv = index + 1
    for index, (key, value) in enumerate(kv_bodies(kv), start=first_kv):
        applied = fsm.apply(index, {"Type": "kv_set", "Verb": "set", "Key": key, "Flags": 0, "Value": value})
        if applied.result is not True:
            raise ValueError(f"kv_set failed at index {index}: {applied.result}")
    return store


def archive(store: Store) -> bytes:
    """A snapshot archive of `store`, as `GET /v1/snapshot` writes one, for `PUT /v1/snapshot`."""
    return build_archive(snapshot(store), index=store.last_index, term=1,
                         configuration={"Servers": [], "Index": 0}, now_ms=int(time.time() * 1000))
