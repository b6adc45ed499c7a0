"""Fixtures for the packaging tests: packages built once per session with `make packages`.

The packages are built into a temporary directory (not the checkout's dist/), exactly as
`make packages` builds them, so the tests check what a user would install. Tools that the
tests drive come from Debian (scripts/debian-packages.txt): dpkg-deb, lintian, rpm,
createrepo-c, apt-utils, debootstrap, systemd (systemd-analyze). A test whose tool is missing
is skipped and says which Debian package provides it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT / "packaging"))

import build_payload  # noqa: E402

VERSION = build_payload.project_version()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds a Debian root or installs packages into it (about a minute)")


def need(tool: str, debian_package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(reason=f"{tool} is not installed (Debian package {debian_package}; "
                           "see scripts/debian-packages.txt)")
    return path


def need_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(reason=f"needs root: {why}")


def run(*cmd: str | Path, check: bool = True, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(c) for c in cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class Built:
    dist: Path
    build: Path
    deb: Path
    deb_dnsmasq: Path
    rpm: Path
    rpm_dnsmasq: Path
    seconds: float


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`make packages` from this checkout, into a temporary dist/ and build/."""
    need("make", "make")
    need("uv", "(uv, see scripts/bootstrap.sh)")
    need("strip", "binutils")
    need("readelf", "binutils")
    base = tmp_path_factory.mktemp("packages")
    dist, build = base / "dist", base / "build"
    started = time.monotonic()
    run("make", "-C", PROJECT_ROOT, "packages", f"DIST={dist}", f"BUILD={build}", timeout=600)
    seconds = time.monotonic() - started
    return Built(
        dist=dist,
        build=build,
        deb=dist / f"cairn_{VERSION}_amd64.deb",
        deb_dnsmasq=dist / f"cairn-dnsmasq_{VERSION}_all.deb",
        rpm=dist / f"cairn-{VERSION}-1.x86_64.rpm",
        rpm_dnsmasq=dist / f"cairn-dnsmasq-{VERSION}-1.noarch.rpm",
        seconds=seconds,
    )
