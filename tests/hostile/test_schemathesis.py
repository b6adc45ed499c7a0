"""schemathesis against a real `cairn agent -dev`, driven by the shipped docs/openapi.json.

Every operation of the document is called with generated parameters and bodies (examples, then
fuzzing), once with ACLs off and once with `default_policy = "deny"` and a management token in
`X-Consul-Token`. What must hold, for every answer:

- its status is one the document lists for that operation (schemathesis' status_code_conformance);
- no 5xx but Consul's own 500 texts (tests/hostile/schemathesis_checks.py);
- the agent's log holds no traceback, and the agent is still up and answering.

Operations that end the test's own conditions are left out: leaving (stops the agent), the log
stream (never ends), snapshot restore and Raft peer removal or leadership transfer (replace or
break the single server's state), and join (random host names would be resolved off loopback).
Blocking queries are bounded by `max_query_time` so a generated `?index` cannot park a worker.

The budget is small for CI (CAIRN_SCHEMATHESIS_EXAMPLES examples per operation, default 8, and
CAIRN_SCHEMATHESIS_SECONDS per run, default 20); raise both for a long run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import http

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
EXAMPLES = os.environ.get("CAIRN_SCHEMATHESIS_EXAMPLES", "8")
SECONDS = os.environ.get("CAIRN_SCHEMATHESIS_SECONDS", "20")
EXCLUDED = ("/v1/agent/leave", "/v1/agent/monitor", "/v1/snapshot", "/v1/operator/raft/peer",
            "/v1/operator/raft/transfer-leader", "/v1/agent/join/{param}")
QUERY_TIMES = 'default_query_time = "1s"\nmax_query_time = "2s"'
MANAGEMENT = str(uuid.UUID(int=0x5C4E_3A7E_5EC0_4E11_A000_0000_0000_0014))


def _schemathesis(url: str, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.hostile.schemathesis_checks",
               PYTHONPATH=str(ROOT), NO_COLOR="1")
    args = [sys.executable, "-m", "schemathesis.cli", "run", str(DOCUMENT), "--url", url,
            "--checks", "status_code_conformance,only_consul_server_errors",
            "--phases", "examples,fuzzing", "--max-examples", EXAMPLES, "--max-time", SECONDS,
            "--request-timeout", "10", "--workers", "4", "--seed", "14", "--no-shrink",
            "--report-dir", str(tmp_path / "schemathesis-report")]
    for path in EXCLUDED:
        args += ["--exclude-path", path]
    for header in headers:
        args += ["-H", header]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=int(SECONDS) * 3 + 60)


@pytest.mark.timeout(int(SECONDS) * 3 + 120)
@pytest.mark.parametrize("mode", ["acl-off", "acl-deny"])
def test_the_api_answers_generated_requests_within_its_contract(agent_factory, tmp_path, mode):
    hcl, headers = QUERY_TIMES, ()
    if mode == "acl-deny":
        hcl += ('\nacl { enabled = true\n default_policy = "deny"\n'
                f' tokens {{ initial_management = "{MANAGEMENT}" }} }}')
        headers = (f"X-Consul-Token: {MANAGEMENT}",)
    agent = agent_factory("-hcl", hcl, node=f"fuzz-{mode}")
    done = _schemathesis(agent.url, tmp_path, *headers)
    report = done.stdout[-12000:] + done.stderr[-3000:]
    print(done.stdout[-1500:])  # the summary: operations, phases, test cases generated
    assert done.returncode == 0, report
    assert "Traceback" not in agent.log_path.read_text(errors="replace"), agent.log_tail(120)
    assert agent.alive()
    status, _, _ = http("GET", f"{agent.url}/v1/status/leader", timeout=5)
    assert status == 200
