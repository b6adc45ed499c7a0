"""A full disk under a server's Raft log: the server stops with the reason and loses nothing.

The server's data dir sits on a 2 MiB tmpfs; KV writes of 64 KiB fill it. The write that cannot be
made durable must not be acknowledged, the server must stop (fail-stop, with `No space left on
device` in its log) instead of running on with a log it cannot extend, and every write it did
acknowledge must be there when the data dir, copied to a roomy disk, is started again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_ports, http, wait_until
from tests.integration.test_raft_driver import _start_server

VALUE = b"x" * 65536


def _leader(url: str) -> bool:
    try:
        status, _, body = http("GET", url + "/v1/status/leader", timeout=2)
        return status == 200 and bool(json.loads(body))
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_the_server_and_keeps_every_acknowledged_write(tmp_path: Path, small_disk: Path):
    ports = free_ports(5)
    url = f"http://127.0.0.1:{ports[0]}"
    data_dir = small_disk / "data"
    proc = _start_server(tmp_path, data_dir, ports)
    acknowledged: list[str] = []
    try:
        wait_until(lambda: _leader(url), timeout=20, what="the server elects itself")
        for i in range(64):  # 4 MiB of values for a 2 MiB disk
            key = f"fill/{i}"
            try:
                status, _, body = http("PUT", f"{url}/v1/kv/{key}", VALUE, timeout=10)
            except OSError:
                break
            if status != 200:
                break
            assert body.strip() == b"true"
            acknowledged.append(key)
        else:
            pytest.fail("64 writes of 64 KiB fitted on a 2 MiB disk")
        assert proc.wait(15) != 0, "the server must stop when its log cannot be written"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
    assert "No space left on device" in logs
    assert acknowledged, "the disk was full before the first write"

    roomy = tmp_path / "roomy"
    shutil.copytree(data_dir, roomy)
    proc = _start_server(tmp_path, roomy, ports)
    try:
        wait_until(lambda: _leader(url), timeout=20, what="the server restarted on a roomy disk elects itself")
        for key in acknowledged:
            status, _, raw = http("GET", f"{url}/v1/kv/{key}?raw")
            assert status == 200 and raw == VALUE, key
        assert http("PUT", f"{url}/v1/kv/after", b"ok")[0] == 200  # and it goes on
    finally:
        proc.terminate()
        proc.wait(10)
