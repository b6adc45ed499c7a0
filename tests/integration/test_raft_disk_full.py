"""A full disk under a server's Raft log: the server stops with the reason and loses nothing.

The server's data dir sits on a 2 MiB tmpfs; KV writes of 64 KiB fill it. The write that cannot be
made durable must not be acknowledged, the server must stop (fail-stop, with `No space left on
device` in its log) instead of running on with a log it cannot extend, and every write it did
acknowledge must be there when the data dir, copied to a roomy disk, is started again.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import FAST_RAFT, Agent, http, wait_until

VALUE = b"x" * 65536


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
    server = Agent(tmp_path, "solo", "-server", "-bootstrap", "-hcl", FAST_RAFT)
    server.data_dir = small_disk / "data"  # the log stays on the roomy disk, the data dir does not
    url = server.url
    acknowledged: list[str] = []
    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the server elects itself")
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
        assert server.proc is not None
        assert server.proc.wait(15) != 0, "the server must stop when its log cannot be written"
    finally:
        server.stop(kill=True)
    assert "No space left on device" in server.log()
    assert acknowledged, "the disk was full before the first write"

    roomy = tmp_path / "roomy"
    shutil.copytree(small_disk / "data", roomy)
    server.data_dir = roomy
    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the server restarted on a roomy disk elects itself")
        for key in acknowledged:
            status, _, raw = http("GET", f"{url}/v1/kv/{key}?raw")
            assert status == 200 and raw == VALUE, key
        assert http("PUT", f"{url}/v1/kv/after", b"ok")[0] == 200  # and it goes on
    finally:
        server.stop()
