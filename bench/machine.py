"""bench/machine.py: the machine line every benchmark writes (or prints) next to its figures.

    from bench.machine import machine   # with the repository's root on sys.path
    f"Measured {today} on {machine()} ..."
    -> "2 cores (Intel(R) Xeon(R) Processor), Python 3.11.7, Linux 6.18.44, load average 0.41 at
       the start and 2.05 at the end"

The load average is the 1-minute figure of /proc/loadavg: once when this module is first
imported (a benchmark imports it before it measures anything) and once when the line is made
(after the measurements, when the figures are written). On a 2-core machine a benchmark's own
processes bring the end figure to about 2; more than that at the end, or anything much above 0
at the start, means other work shared the machine and the figures may have moved with it.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the first one listed)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average() -> str:
    """The 1-minute load average, as /proc/loadavg writes it ("?" where there is none)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


START_LOAD = load_average()


def machine() -> str:
    """Cores, CPU model, Python, kernel, and the load average at the start and now (the end)."""
    return (f"{os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, load average {START_LOAD} at the start and "
            f"{load_average()} at the end")


def command_line(script: str, argv: list[str] | None = None) -> str:
    """How the benchmark was run, for its section: `uv run python <script> <its arguments>`, the
    file given to --write shown by its name (where it was on the measuring machine says nothing)."""
    args = list(sys.argv[1:] if argv is None else argv)
    shown = []
    for i, arg in enumerate(args):
        if i and args[i - 1] == "--write":
            arg = Path(arg).name
        elif arg.startswith("--write="):
            arg = "--write=" + Path(arg.removeprefix("--write=")).name
        shown.append(shlex.quote(arg))
    return " ".join(["uv run python", script, *shown])
