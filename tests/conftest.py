"""Shared test fixtures: a real `cairn agent -dev` process (`agent`, `agent_factory`).

The process harness itself (one agent-process class, clusters, free ports, a tiny HTTP client) is
in tests/harness/; its helpers are importable from here as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import PROJECT_ROOT, Agent, free_port, free_ports, http, http_json, wait_until

__all__ = ["PROJECT_ROOT", "AgentProcess", "free_port", "free_ports", "http", "http_json", "wait_until"]

START_TIMEOUT_S = 20.0


def AgentProcess(tmp_path: Path, *extra_args: str, node: str = "test-node") -> Agent:  # noqa: N802 - a constructor
    """A started `cairn agent -dev` that names a leader; its `stop()` asserts a clean exit."""
    agent = Agent(tmp_path, node, *extra_args, dev=True).start()
    try:
        agent.wait_leader(START_TIMEOUT_S)
    except BaseException:
        agent.stop(check=False)
        raise
    return agent


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A fresh `cairn agent -dev` with node name "test-node"."""
    proc = AgentProcess(tmp_path, node="test-node")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """`agent_factory(*extra_args, node="...")` starts another agent; all stop at teardown."""
    started: list[Agent] = []

    def start(*extra_args: str, node: str = "test-node") -> Agent:
        proc = AgentProcess(tmp_path, *extra_args, node=node)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        failures = []
        for proc in reversed(started):
            try:
                proc.stop()
            except AssertionError as exc:
                failures.append(str(exc))
        assert not failures, "\n".join(failures)
