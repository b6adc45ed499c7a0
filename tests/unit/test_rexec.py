"""Remote exec pieces without a cluster: the agent side (appliance/rexec.py) against a store and a
consensus that records proposals, and the CLI's job spec and key parsing (appliance/cli/exec.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import pytest

from appliance.cli.exec import Job, job_spec
from appliance.events import UserEventRecord
from appliance.rexec import RemoteExec
from appliance.state.store import Store

pytestmark = pytest.mark.timeout(30)
SID = "11111111-2222-4333-8444-555555555555"


class Recorder:
    """Consensus that accepts every kv_lock (or refuses them all) and remembers them."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.writes: list[tuple[str, bytes | None]] = []
        self.reads: list[str] = []

    async def propose(self, command: dict[str, Any]) -> Any:
        assert command["Type"] == "kv_lock" and command["Session"] == SID
        self.writes.append((command["Key"], command["Value"]))
        return self.ok

    async def read_point(self, consistency: str) -> None:
        self.reads.append(consistency)


def _store(spec: dict[str, Any] | None) -> Store:
    store = Store()
    if spec is not None:
        store.kv[f"_rexec/{SID}/job"] = {"Key": f"_rexec/{SID}/job", "Value": json.dumps(spec).encode()}
    return store


def _event() -> UserEventRecord:
    payload = json.dumps({"Prefix": "_rexec", "Session": SID}).encode()
    return UserEventRecord("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "_rexec", payload)


def run_job(spec: dict[str, Any] | None, *, enabled: bool = True, ok: bool = True) -> Recorder:
    consensus = Recorder(ok)
    rexec = RemoteExec("n1", _store(spec), consensus, lambda: enabled)  # type: ignore[arg-type]

    async def main() -> None:
        rexec.handle(_event())
        while rexec.tasks:
            await asyncio.gather(*rexec.tasks)

    asyncio.run(main())
    return consensus


def keys(rec: Recorder) -> list[str]:
    return [k.removeprefix(f"_rexec/{SID}/n1/") for k, _ in rec.writes]


def output(rec: Recorder) -> bytes:
    return b"".join(v or b"" for k, v in rec.writes if "/out/" in k)


def test_disabled_agent_ignores_the_job(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent"):
        rec = run_job({"Command": "echo hi"}, enabled=False)
    assert rec.writes == []
    assert "ignoring remote exec event, disabled.: event_name=_rexec event_id=aaaaaaaa" in caplog.text


def test_command_output_and_exit_code() -> None:
    rec = run_job({"Command": "echo hi; echo err >&2; exit 4", "Wait": 2_000_000_000})
    assert keys(rec)[0] == "ack" and keys(rec)[-1] == "exit" and rec.writes[-1][1] == b"4"
    assert output(rec) == b"hi\nerr\n"
    assert all(k.startswith("out/0000") for k in keys(rec)[1:-1])


def test_heartbeats_while_the_command_is_quiet() -> None:
    rec = run_job({"Command": "sleep 0.5; echo late", "Wait": 100_000_000})  # Wait 100 ms
    empties = [k for k, v in rec.writes if "/out/" in k and not v]
    assert len(empties) >= 2 and output(rec) == b"late\n"
    outs = [k for k in keys(rec) if k.startswith("out/")]
    assert outs == [f"out/{i:05x}" for i in range(len(outs))]  # numbered in order


def test_args_script_and_failures() -> None:
    rec = run_job({"Args": ["printf", "%s|", "a b", "c"], "Wait": 1_000_000_000})
    assert output(rec) == b"a b|c|" and rec.writes[-1][1] == b"0"
    script = base64.b64encode(b"#!/bin/sh\necho script\nexit 7\n").decode()
    rec = run_job({"Script": script, "Wait": 1_000_000_000})
    assert output(rec) == b"script\n" and rec.writes[-1][1] == b"7"
    rec = run_job({"Args": ["/nonexistent/binary"], "Wait": 1_000_000_000})
    assert keys(rec) == ["ack", "exit"] and rec.writes[-1][1] == b"255"
    rec = run_job(None)  # no job spec even after a consistent read: nothing written
    assert rec.writes == [] and rec.reads == ["consistent"]
    rec = run_job({"Command": "echo hi"}, ok=False)  # the session is gone: stop after the ack
    assert keys(rec) == ["ack"]


def test_cli_job_spec_and_replies() -> None:
    assert job_spec(["echo", "a b"], True, 2.0, None) == {"Command": "echo a b", "Wait": 2_000_000_000}
    assert job_spec(["echo", "a b"], False, 0.5, None) == {"Args": ["echo", "a b"], "Wait": 500_000_000}
    assert job_spec(["-"], True, 1.0, b"x")["Script"] == "eA=="
    job = Job(None, "_rexec/", verbose=True)  # type: ignore[arg-type]
    job.session = SID

    def entry(suffix: str, value: bytes | None = None) -> dict[str, Any]:
        return {"Key": f"_rexec/{SID}/{suffix}", "Value": base64.b64encode(value).decode() if value else None}

    lines = list(job.events([entry("job", b"{}"), entry("n1/ack"), entry("n1/out/00000", b"a\nb\n"),
                             entry("n1/out/00001"), entry("n1/exit", b"3"), entry("n2/ack")]))
    assert lines == ["    Node n1: acknowledged", "    n1: a", "    n1: b", "==> n1: finished with exit code 3",
                     "    Node n2: acknowledged"]
    assert job.exits == {"n1": 3} and job.acks == {"n1", "n2"}
    assert list(job.events([entry("n1/ack")])) == []  # seen before
