"""bench/gossip/queries.py: Serf queries in the gossip simulator (simulated time, LAN profile).

Run:  uv run python bench/gossip/queries.py [--sizes 10,100] [--seeds 5]

1. Latency: one member of a settled pool (joined one by one, 30 s to settle, no loss) asks a
   query with acks; the simulated time until half, 99 % and all members acked and answered,
   next to the query's timeout (gossip interval x 16 x ceil(log10(members + 1))).
2. Relays: the same query on 100 members with 5 % and 20 % of datagrams lost, without relays and
   with relay factor 2: responses still missing when the query times out, one figure per seed.

The pools are the simulator world of tests/unit/test_gossip_parity_sim.py (the Serf core as
shipped over tests/sim/gossip_sim.py's network).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.unit.test_gossip_parity_sim import World


def settled(n: int, seed: int) -> tuple[World, list]:
    world = World(seed=seed)
    first = world.member("n0")
    nodes = [first] + [world.member(f"n{i}", join=first, at=0.02 * i) for i in range(1, n)]
    world.run_until(30.0)
    world.answers["q"] = b"ok"
    return world, nodes


def latency(n: int, seed: int) -> str:
    world, nodes = settled(n, seed)
    t0, wall = world.now, time.perf_counter()
    handle = nodes[1].serf.query("q", b"x", t0, request_ack=True)
    world.after(nodes[1])
    reached: dict[str, float] = {}
    while world.now < handle.deadline:
        world.run_until(world.now + 0.01)
        for label, count in (("acks", len(handle.acks)), ("responses", len(handle.responses))):
            for share in (0.5, 0.99, 1.0):
                key = f"{label} {int(share * 100)}%"
                if count >= share * n and key not in reached:
                    reached[key] = world.now - t0
    figures = ", ".join(f"{k} {v:.2f} s" for k, v in reached.items())
    return (f"{n} members: timeout {handle.deadline - t0:.1f} s; {figures} "
            f"(wall {time.perf_counter() - wall:.2f} s)")


def missing(loss: float, relay: int, seed: int, n: int = 100) -> int:
    world, nodes = settled(n, seed)
    world.o.loss = loss
    handle = nodes[1].serf.query("q", b"x", world.now, relay_factor=relay)
    world.after(nodes[1])
    world.run_until(handle.deadline + 0.01)
    return n - len(handle.responses)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100", help="pool sizes for the latency figures")
    p.add_argument("--seeds", type=int, default=5, help="seeds per relay figure")
    args = p.parse_args()
    for n in (int(x) for x in args.sizes.split(",")):
        print(latency(n, seed=21))
    for loss in (0.05, 0.2):
        for relay in (0, 2):
            runs = [missing(loss, relay, 100 + s) for s in range(args.seeds)]
            print(f"{int(loss * 100)} % loss, relay factor {relay}: responses missing of 100 at the timeout {runs}")


if __name__ == "__main__":
    main()
