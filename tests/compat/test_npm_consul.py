"""The unmodified npm client `consul` (2.x, locked in tests/compat/npm/package-lock.json and
installed by scripts/bootstrap.sh) against a real `cairn agent -dev`: sessions (create with checks
and a TTL, info, node, list, renew, destroy), KV acquire and release, and transactions with
several verbs, one of them failing as a whole (409 with the failing operation's index).

The client runs in Node.js (tests/compat/npm/sessions.js) and prints what it saw as JSON.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import AgentProcess, http_json, wait_until

pytestmark = pytest.mark.timeout(90)

NPM_DIR = Path(__file__).with_name("npm")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_npm_consul_sessions_locks_and_transactions(agent: AgentProcess) -> None:
    assert shutil.which("node"), "Node.js is installed by scripts/bootstrap.sh"
    assert (NPM_DIR / "node_modules" / "consul").is_dir(), "npm ci in tests/compat/npm (scripts/bootstrap.sh)"
    wait_until(lambda: any(c["CheckID"] == "serfHealth" for c in agent.get_json("/v1/health/node/test-node")[2]),
               timeout=15, what="serfHealth registered")
    run = subprocess.run(["node", "sessions.js", "127.0.0.1", str(agent.http_port), "test-node"], cwd=NPM_DIR,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)

    sid = seen["created"]["ID"]
    info = seen["info"]
    assert (info["ID"], info["Name"], info["Node"], info["TTL"], info["Behavior"]) == (
        sid, "npm-lock", "test-node", "15s", "release")
    assert info["LockDelay"] == 1_000_000_000 and info["NodeChecks"] == ["serfHealth"]
    assert sid in seen["node"] and sid in seen["list"]
    assert seen["renew"][0]["ID"] == sid  # renew answers a list of one session

    assert seen["acquire"] is True and seen["acquireOther"] in (False, None)  # the client drops a false body
    held = seen["heldEntry"]
    assert (held["Session"], held["LockIndex"], held["Value"]) == (sid, 1, "held")  # kv.get decodes Value
    assert seen["release"] is True
    released = seen["releasedEntry"]
    assert "Session" not in released and released["LockIndex"] == 1 and released["Value"] == "free"

    results = seen["txn"]["Results"]
    assert [r["KV"]["Key"] for r in results] == ["npm/txn/a", "npm/txn/b", "npm/txn/a"]
    assert results[1]["KV"]["LockIndex"] == 1 and results[2]["KV"]["Value"] == b64("1")
    failed = seen["txnFailed"]
    assert failed is not None and failed["status"] == 409
    assert [e["OpIndex"] for e in failed["body"]["Errors"]] == [1]
    assert seen["afterFailed"] is None  # all or nothing: the set in the failed transaction is not there

    assert seen["destroyed"] is True
    assert "Session" not in seen["afterDestroy"]  # the destroyed session's lock was released
    assert seen["infoGone"] is None
    _, _, sessions = http_json("GET", agent.url + "/v1/session/list")
    assert sessions == []
