"""Logging in Consul's line format, with JSON lines and live subscribers for /v1/agent/monitor.

Line format (hclog): `2026-01-02T03:04:05.678Z [INFO]  agent: Synced node info`. With
`-log-json` each record is one JSON object with hclog's keys (`@level`, `@message`, `@module`,
`@timestamp`). Loggers are named by subsystem (`agent`, `agent.http`, `agent.server.raft`).

The root `cairn` handler filters by the configured level, which `set_level()` changes on reload.
Subscribers (`cairn monitor`) pick their own level: records are created down to DEBUG and each
subscriber gets those at or above its level through a bounded queue; a subscriber that falls
behind loses lines rather than slowing the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import IO

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "err": logging.ERROR}
_NAMES = {5: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}
logging.addLevelName(5, "TRACE")


class UnknownLevel(ValueError):
    pass


def parse_level(name: str) -> int:
    level = LEVELS.get(name.strip().lower())
    if level is None:
        raise UnknownLevel(f"Unknown log level: {name}")
    return level


def _timestamp(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def format_line(record: logging.LogRecord) -> str:
    level = _NAMES.get(record.levelno, record.levelname)
    return f"{_timestamp(record.created)} {('[' + level + ']').ljust(7)} {record.name}: {record.getMessage()}"


def format_json(record: logging.LogRecord) -> str:
    return json.dumps({
        "@level": _NAMES.get(record.levelno, record.levelname).lower(),
        "@message": record.getMessage(),
        "@module": record.name,
        "@timestamp": _timestamp(record.created),
    })


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        line = format_json(record) if self.as_json else format_line(record)
        if record.exc_info and not self.as_json:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Subscriber:
    def __init__(self, level: int, as_json: bool, maxsize: int = 512) -> None:
        self.level = level
        self.as_json = as_json
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0


class MonitorHandler(logging.Handler):
    """Fans records out to the subscribers of /v1/agent/monitor."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.subscribers: set[Subscriber] = set()

    def emit(self, record: logging.LogRecord) -> None:
        for sub in list(self.subscribers):
            if record.levelno < sub.level:
                continue
            try:
                sub.queue.put_nowait(format_json(record) if sub.as_json else format_line(record))
            except asyncio.QueueFull:
                sub.dropped += 1


ROOT = "agent"
monitor = MonitorHandler()
_console: logging.Handler | None = None


def setup(level: str = "info", as_json: bool = False, stream: IO[str] | None = None) -> None:
    """Configure the `agent` logger tree once per process."""
    global _console
    root = logging.getLogger(ROOT)
    root.setLevel(5)
    root.propagate = False
    if _console is not None:
        root.removeHandler(_console)
    _console = logging.StreamHandler(stream or sys.stdout)
    _console.setFormatter(_Formatter(as_json))
    _console.setLevel(parse_level(level))
    root.addHandler(_console)
    if monitor not in root.handlers:
        root.addHandler(monitor)


def set_level(level: str) -> None:
    if _console is not None:
        _console.setLevel(parse_level(level))
