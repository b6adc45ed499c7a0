"""A service registration costs the same whatever the agent's other checks: one service with
20,000 TTL checks (from a config directory) must not make later registrations slow (they took
0.3-0.5 s at 30,000 checks when every change re-compared every check with the catalog)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import AgentProcess, wait_until

CHECKS = 20_000


def test_registration_with_many_checks(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    checks = [{"id": f"c{i}", "name": f"c{i}", "ttl": "10m"} for i in range(CHECKS)]
    (conf / "big.json").write_text(json.dumps({"service": {"name": "big", "id": "big", "checks": checks}}))
    agent = AgentProcess(tmp_path, "-config-dir", str(conf))
    try:
        wait_until(lambda: len(agent.get_json("/v1/health/checks/big")[2]) == CHECKS, timeout=60,
                   what="the config's checks in the catalog")
        times = []
        for i in range(15):
            start = time.perf_counter()
            status, _, _ = agent.put("/v1/agent/service/register", {"Name": f"s{i}", "ID": f"s{i}"})
            times.append(time.perf_counter() - start)
            assert status == 200
        times.sort()
        assert times[len(times) // 2] < 0.05, times  # about 1 ms; 0.2 s and more when it was quadratic
        _, _, nodes = agent.get_json("/v1/catalog/service/s14")
        assert [n["ServiceID"] for n in nodes] == ["s14"]
        # a check's change still reaches the catalog
        assert agent.put("/v1/agent/check/pass/c7")[0] == 200
        _, _, state = agent.get_json("/v1/health/state/passing")
        assert "c7" in {c["CheckID"] for c in state}
    finally:
        agent.stop()
