"""bench/scale/run.py --quick runs (so the benchmark cannot rot) and its catalog keeps the memory
layout of appliance/state/shapes.py: shared values, not a full copy per record."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_quick_runs_and_reports_every_figure():
    proc = subprocess.run([sys.executable, str(ROOT / "bench/scale/run.py"), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "catalog: 200 nodes, 2,000 instances" in out
    traced = int(re.search(r"traced heap: [\d.,]+ MB = ([\d,]+) B per instance", out)[1].replace(",", ""))
    assert 300 < traced < 3000, out  # every record holding its own defaults took about 3,500
    assert re.search(r"RSS growth: +[\d.,]+ MB = [\d,]+ B per instance", out), out
    assert re.search(r"snapshot: [\d.]+ MB \([\d,]+ B per instance\), save \d+ ms, restore \d+ ms", out), out
    size = int(re.search(r"\?passing: [\d.]+ ms \(([\d,]+) bytes\)", out)[1].replace(",", ""))
    assert size > 1000, out  # the passing instances of one service, rendered
    assert re.search(r"catalog/services: [\d.]+ ms", out) and re.search(r"sd/prometheus, full render: \d+ ms", out)
    assert re.search(r"answers digest \(.*\): [0-9a-f]{16}$", out, re.M), out


def test_scale_bench_refuses_sizes_it_cannot_build():
    proc = subprocess.run([sys.executable, str(ROOT / "bench/scale/run.py"), "--nodes", "0"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--nodes must be at least 1" in proc.stderr
