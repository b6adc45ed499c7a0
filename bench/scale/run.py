"""bench/scale: the catalog store at 10,000 nodes and 100,000 service instances, in one process.

    uv run python bench/scale/run.py [--nodes 10000] [--instances 100000] [--reps 20] [--quick]

Builds a CGSB-like catalog with the shipped state store and FSM (appliance.state), no network
(the builder is bench/scale/catalog.py, shared with tests/hostile/test_scale_bounds.py): every
node is registered with node meta and a node check (`serfHealth`), then every instance with its
node, two or three tags, service meta and one service check (every third instance a second one).
Each write is a `/v1/catalog/register` body turned into a command by the HTTP handler's own
decoder (`register_command`), encoded as a log entry and applied by `FSM.apply_entry` as a
follower applies it. Instances are spread over `--instances / 20` service names (20 each) and
placed round-robin on the nodes.

It reports, per instance:
1. the store's bytes: Python heap allocations still held once the catalog is built (tracemalloc,
   in a second build of the same catalog) and the RSS growth of the first build (/proc/self/status);
2. a snapshot (appliance.state.snapshot): save time, size, restore time;
3. the reads a user makes at that size, each the median of --reps, rendered as the HTTP handlers
   render them (views.check_service_nodes + `?passing` + the compact JSON encoder for
   /v1/health/service/<name>?passing, views.catalog_services for /v1/catalog/services, and
   sd.targets.target_groups for a full /v1/sd/prometheus render without its cache);
4. a digest of the snapshot's bytes and of the three answers' bytes: a change to the store's
   layout must leave it as it was.
Times are this process's CPU time (time.process_time: one thread, so on a quiet machine the same
as the wall clock; on a shared one it is inflated less by other work), and the load average is
printed with the figures.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.http.encoding import dumps  # noqa: E402 - the project's root is on the path only now
from appliance.state import views  # noqa: E402
from appliance.state.snapshot import restore, snapshot  # noqa: E402
from appliance.state.store import Store  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.scale.catalog import DATACENTER, PER_SERVICE, build  # noqa: E402
from sd.targets import Filters, target_groups  # noqa: E402


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def median_ms(fn: Callable[[], bytes], reps: int, answers: Any) -> float:
    """The median time of `fn`, in ms; its answer goes into the `answers` digest."""
    times = []
    for _ in range(reps):
        start = time.process_time()
        body = fn()
        times.append(time.process_time() - start)
    answers.update(body)
    return statistics.median(times) * 1000


def health_passing(store: Store, name: str) -> bytes:
    """/v1/health/service/<name>?passing as the handler renders it (compact JSON)."""
    body = [csn for csn in views.check_service_nodes(store, name) if views.all_passing(csn["Checks"])]
    return dumps(body, False)


def snapshot_and_reads(store: Store, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start = time.process_time()
    data = snapshot(store)
    out["snapshot_save_s"] = time.process_time() - start
    out["snapshot_bytes"] = len(data)
    start = time.process_time()
    restored = restore(data)
    out["snapshot_restore_s"] = time.process_time() - start
    if snapshot(restored) != data:
        raise SystemExit("a restored store does not snapshot to the same bytes")
    name = "svc-00000"
    answers = hashlib.sha256(data)
    out["health_bytes"] = len(health_passing(store, name))
    out["health_ms"] = median_ms(lambda: health_passing(store, name), reps, answers)
    out["services_ms"] = median_ms(lambda: dumps(views.catalog_services(store), False), reps, answers)
    out["sd_ms"] = median_ms(lambda: dumps(target_groups(store, Filters(), DATACENTER), False), max(3, reps // 4),
                             answers)
    out["digest"] = answers.hexdigest()[:16]
    return out


def measure(nodes: int, instances: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": nodes, "instances": instances}
    gc.collect()
    rss0 = rss_kb()
    start = time.process_time()
    store = build(nodes, instances)
    out["build_s"] = time.process_time() - start
    gc.collect()
    out["rss_bytes"] = (rss_kb() - rss0) * 1024
    out.update(snapshot_and_reads(store, reps))
    del store
    gc.collect()

    tracemalloc.start()  # a second build, traced: the first one's figures are not slowed by it
    base = tracemalloc.get_traced_memory()[0]
    traced = build(nodes, instances)
    gc.collect()
    out["traced_bytes"] = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del traced
    return out


def report(r: dict[str, Any]) -> str:
    n = r["instances"]
    lines = [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {machine()}",
        f"catalog: {r['nodes']:,} nodes, {n:,} instances (built in {r['build_s']:.1f} s); times are CPU time",
        f"store, traced heap: {r['traced_bytes'] / 2**20:,.1f} MB = {r['traced_bytes'] / n:,.0f} B per instance",
        f"store, RSS growth:  {r['rss_bytes'] / 2**20:,.1f} MB = {r['rss_bytes'] / n:,.0f} B per instance",
        f"snapshot: {r['snapshot_bytes'] / 2**20:,.1f} MB ({r['snapshot_bytes'] / n:,.0f} B per instance), "
        f"save {r['snapshot_save_s'] * 1000:,.0f} ms, restore {r['snapshot_restore_s'] * 1000:,.0f} ms",
        f"health/service/<one of {PER_SERVICE}>?passing: {r['health_ms']:.3f} ms ({r['health_bytes']:,} bytes)",
        f"catalog/services: {r['services_ms']:.1f} ms",
        f"sd/prometheus, full render: {r['sd_ms']:.0f} ms",
        f"answers digest (sha256 of the snapshot and the three answers): {r['digest']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--instances", type=int, default=100000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="200 nodes, 2,000 instances, 3 repetitions")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.instances, args.reps = 200, 2000, 3
    if args.nodes < 1 or args.instances < PER_SERVICE:
        p.error(f"--nodes must be at least 1 and --instances at least {PER_SERVICE}")
    print(report(measure(args.nodes, args.instances, args.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
