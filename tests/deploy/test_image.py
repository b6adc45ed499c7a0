"""The container image: packaging/image/build.sh (what `make image` runs) from the built deb and
the Debian 12 root, with buildah and no container engine.

No engine runs here either, so the test reads the image the way one would: it unpacks the layer
of the OCI archive into a directory and runs, with chroot as the image's user, `cairn version`
and the image's own entrypoint and default command (`cairn agent ... -dev -client=0.0.0.0`, plus
loopback ports), which answers HTTP and DNS and leaves on SIGTERM. The image's configuration
(user, entrypoint, volume, ports, stop signal) is checked with `buildah inspect`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import free_ports, http, wait_until
from tests.packaging.conftest import PROJECT_ROOT, need, run

pytestmark = pytest.mark.timeout(600)

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def unpack(archive: Path, dest: Path) -> dict:
    """The layers of an oci-archive unpacked into dest; the image's config."""
    oci = dest.parent / "oci"
    with tarfile.open(archive) as tar:
        tar.extractall(oci, filter="tar")
    index = json.loads((oci / "index.json").read_text())
    blob = lambda digest: oci / "blobs" / digest.replace(":", "/")  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    dest.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"])) as tar:
            tar.extractall(dest, filter="tar", numeric_owner=True)
    return json.loads(blob(manifest["config"]["digest"]).read_text())


def test_image_builds_and_its_root_runs_cairn(tmp_path: Path, deb_package: Path, debian_tarball: Path) -> None:
    need("buildah", "buildah")
    work, archive = tmp_path / "work", tmp_path / "cairn-image.tar"
    run(
        PROJECT_ROOT / "packaging" / "image" / "build.sh",
        "--rootfs-tarball",
        debian_tarball,
        "--work",
        work,
        "--tag",
        "localhost/cairn:test",
        deb_package,
        archive,
        timeout=900,
    )

    storage = ["buildah", "--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    inspect = json.loads(run(*storage, "inspect", "--type", "image", "localhost/cairn:test").stdout)
    oci = inspect["OCIv1"]["config"]
    assert oci["User"] == "cairn:cairn"
    assert oci["Entrypoint"] == ["/usr/bin/cairn", "agent", "-data-dir=/var/lib/cairn", "-config-dir=/etc/cairn.d"]
    assert oci["Cmd"] == ["-dev", "-client=0.0.0.0"]
    assert set(oci["Volumes"]) == {"/var/lib/cairn"} and oci["StopSignal"] == "SIGTERM"
    assert {"8300/tcp", "8301/udp", "8500/tcp", "8600/udp"} <= set(oci["ExposedPorts"])
    assert len(inspect["OCIv1"]["rootfs"]["diff_ids"]) == 1

    root = tmp_path / "rootfs"
    config = unpack(archive, root)["config"]
    assert config["Entrypoint"] == oci["Entrypoint"]
    assert not (root / "etc/cairn.d/cairn.hcl").exists() and (root / "etc/cairn.d/image.hcl").exists()
    assert not any((root / "var/lib/apt/lists").iterdir())

    name, group = config["User"].split(":")
    uid = next(
        line.split(":")[2] for line in (root / "etc/passwd").read_text().splitlines() if line.startswith(name + ":")
    )
    gid = next(
        line.split(":")[2] for line in (root / "etc/group").read_text().splitlines() if line.startswith(group + ":")
    )
    assert (root / "var/lib/cairn").stat().st_uid == int(uid), "the data directory belongs to the image's user"
    assert (root / "etc/cairn.d").stat().st_gid == int(gid), "the config directory is readable by the image's group"
    user = f"--userspec={uid}:{gid}"
    version = subprocess.run(
        [CHROOT, user, str(root), "/usr/bin/cairn", "version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and "0.1.0" in version.stdout, version

    http_port, dns_port, server_port, lan, wan = free_ports(5)
    argv = [
        *config["Entrypoint"],
        *config["Cmd"],
        "-client=127.0.0.1",
        "-bind=127.0.0.1",
        f"-http-port={http_port}",
        f"-dns-port={dns_port}",
        f"-server-port={server_port}",
        f"-serf-lan-port={lan}",
        f"-serf-wan-port={wan}",
    ]
    env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in config["Env"]}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CHROOT, user, str(root), *argv], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def leader() -> str:
            try:
                status, _, body = http("GET", f"http://127.0.0.1:{http_port}/v1/status/leader", timeout=1)
                return json.loads(body) if status == 200 else ""
            except (OSError, ValueError):
                return ""

        wait_until(leader, timeout=60, interval=0.3, what="the image's agent elects itself")
        from dnslib import DNSRecord

        reply = DNSRecord.parse(DNSRecord.question("consul.service.consul", "A").send("127.0.0.1", dns_port, timeout=2))
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        proc.send_signal(signal.SIGTERM)  # what a container stop sends
        assert proc.wait(30) == 0, log.read_text(errors="replace")[-3000:]
        assert "Gracefully shutting down agent" in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
