"""Installing the packages for real.

deb: a Debian 12 root made with debootstrap (minbase plus python3.11 and adduser, what the deb
depends on), cached as a tarball in build/packaging-cache/ so that only the first run needs the
Debian mirror (about a minute). In it: `dpkg -i`, the installed /usr/bin/cairn started with
chroot answers HTTP and DNS, the packaged config runs as the cairn user, an upgrade keeps an
edited config, remove keeps user and data, purge removes them, and `apt-get install cairn` works
from the repository packaging/repo.sh makes. There is no systemd running in a chroot, which is
also what the maintainer scripts must tolerate.

rpm: `rpm -i --root` into an empty tree (no RHEL userland here, so --nodeps --noscripts): the
same layout as the deb, and the payload runs on a Python 3.11.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_ports
from tests.packaging.conftest import PROJECT_ROOT, VERSION, Built, need, need_root, run

# The first run builds the Debian root (debootstrap, about a minute, more on a slow mirror).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MIRROR = os.environ.get("CAIRN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP = ["--variant=minbase", "--include=python3.11,adduser", "bookworm"]
CACHE = PROJECT_ROOT / "build" / "packaging-cache"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def debian_root_tarball() -> Path:
    """A Debian 12 root as a tarball, made once with debootstrap and kept in build/packaging-cache."""
    key = hashlib.sha256(" ".join([*DEBOOTSTRAP, MIRROR]).encode()).hexdigest()[:12]
    tarball = CACHE / f"debian12-minbase-{key}.tar.gz"
    if tarball.exists():
        return tarball
    need("debootstrap", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"debootstrap-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        proc = run("debootstrap", *DEBOOTSTRAP, work / "root", MIRROR, check=False, timeout=900)
        if proc.returncode != 0:
            pytest.skip(reason=f"debootstrap from {MIRROR} failed (no Debian mirror reachable?):\n"
                               f"{proc.stdout[-2000:]}")
        partial = tarball.with_suffix(".partial")
        run("tar", "-C", work / "root", "-czf", partial, ".", timeout=600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


class Root:
    """A Debian root to chroot into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")

    def sh(self, script: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
        return run("chroot", self.path, "/bin/sh", "-ec", script, check=check, timeout=timeout, env=env)

    def passwd(self, name: str) -> list[str] | None:
        for line in (self / "etc/passwd").read_text().splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        return None

    def group(self, name: str) -> list[str] | None:
        for line in (self / "etc/group").read_text().splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        return None

    def copy_in(self, src: Path, rel: str) -> str:
        dest = self / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        return "/" + rel.lstrip("/")


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Root:
    need_root("chroot and dpkg into a Debian root")
    need("chroot", "coreutils")
    tarball = debian_root_tarball()
    path = tmp_path_factory.mktemp("debian12") / "root"
    path.mkdir()
    run("tar", "-C", path, "-xzf", tarball, timeout=300)
    return Root(path)


class ChrootAgent:
    """`/usr/bin/cairn agent ...` inside the root, as the cairn user, on free loopback ports."""

    def __init__(self, root: Root, *args: str, user: str = "cairn") -> None:
        self.http_port, self.dns_port, self.server_port, lan, wan = free_ports(5)
        self.log = root.path.parent / f"agent-{self.http_port}.log"
        cmd = [CHROOT, f"--userspec={user}:{user}", str(root.path), "/usr/bin/cairn", "agent", *args,
               "-http-port", str(self.http_port), "-dns-port", str(self.dns_port),
               "-server-port", str(self.server_port), "-serf-lan-port", str(lan), "-serf-wan-port", str(wan)]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     env={"PATH": "/usr/bin:/bin"}, start_new_session=True, cwd="/")  # fmt: skip

    def wait_leader(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v1/status/leader", timeout=2) as resp:
                    leader = json.loads(resp.read())
                    if leader:
                        return leader
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no leader within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def dns_query(port: int, name: str) -> list[str]:
    from dnslib import QTYPE, DNSRecord

    reply = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", port, timeout=5))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def repack(deb: Path, out: Path, version: str, *, conffile_note: str) -> Path:
    """The same deb with a higher version and a changed packaged cairn.hcl (as a real upgrade may have)."""
    tree = out.parent / f"tree-{version}"
    run("dpkg-deb", "-R", deb, tree)
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {VERSION}\n", f"Version: {version}\n"))
    hcl = tree / "etc/cairn.d/cairn.hcl"
    hcl.write_text(hcl.read_text() + f"\n# {conffile_note}\n")
    md5 = hashlib.md5(hcl.read_bytes()).hexdigest()  # noqa: S324 - dpkg's own md5sums format
    sums = (tree / "DEBIAN" / "md5sums")
    if sums.exists():
        sums.write_text("".join(
            (f"{md5}  etc/cairn.d/cairn.hcl\n" if line.endswith("  etc/cairn.d/cairn.hcl") else line + "\n")
            for line in sums.read_text().splitlines()
        ))  # fmt: skip
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", tree, out)
    return out


# ------------------------------------------------------------------------------------ deb


def test_dpkg_install(debian_root: Root, built: Built) -> None:
    root = debian_root
    deb = root.copy_in(built.deb, "tmp/cairn.deb")
    out = root.sh(f"dpkg -i {deb}")
    assert "Setting up cairn" in out.stdout, out.stdout + out.stderr
    assert root.sh("dpkg-query -W -f='${Status} ${Version}' cairn").stdout == f"install ok installed {VERSION}"

    user, group = root.passwd("cairn"), root.group("cairn")
    assert user is not None and group is not None
    assert user[3] == group[2]  # primary group cairn
    assert user[5] == "/var/lib/cairn" and user[6] == "/usr/sbin/nologin"
    assert int(user[2]) < 1000  # a system user

    data = (root / "var/lib/cairn").stat()
    assert (data.st_uid, data.st_gid, oct(data.st_mode & 0o7777)) == (int(user[2]), int(group[2]), "0o750")
    for path, mode in (("etc/cairn.d", "0o750"), ("etc/cairn.d/cairn.hcl", "0o640")):
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, int(group[2]), mode), path
    overrides = root.sh("dpkg-statoverride --list").stdout
    assert "root cairn 750 /etc/cairn.d" in overrides and "root cairn 640 /etc/cairn.d/cairn.hcl" in overrides

    # Enabled per Debian practice (deb-systemd-helper), although no systemd runs here.
    assert (root / "etc/systemd/system/multi-user.target.wants/cairn.service").is_symlink()
    # Byte code compiled by postinst for the root's python3.11.
    assert list((root / "usr/lib/cairn/lib/appliance/__pycache__").glob("agent.cpython-311.pyc"))
    assert f"Cairn v{VERSION}" in root.sh("cairn version").stdout


def test_installed_dev_agent_answers_http_and_dns(debian_root: Root) -> None:
    agent = ChrootAgent(debian_root, "-dev")
    try:
        assert agent.wait_leader() == f"127.0.0.1:{agent.server_port}"
        assert dns_query(agent.dns_port, "consul.service.consul") == ["127.0.0.1"]
    finally:
        assert agent.stop() == 0


def test_packaged_config_runs_as_the_cairn_user(debian_root: Root) -> None:
    """What the unit runs: validate, then the agent from /etc/cairn.d, as user cairn."""
    root = debian_root
    assert root.sh("runuser -u cairn -- cairn validate -quiet /etc/cairn.d").returncode == 0
    agent = ChrootAgent(root, "-config-dir=/etc/cairn.d")
    try:
        agent.wait_leader()
        node_id = root / "var/lib/cairn/node-id"
        assert node_id.exists() and node_id.stat().st_uid == int(root.passwd("cairn")[2])
    finally:
        assert agent.stop() == 0


def test_broken_config_and_busy_ports_fail_fast_with_a_clear_message(debian_root: Root) -> None:
    root = debian_root
    broken = root / "etc/cairn.d/broken.hcl"
    broken.write_text('server = "maybe\n')
    try:
        proc = root.sh("runuser -u cairn -- cairn validate -quiet /etc/cairn.d", check=False)
        assert proc.returncode != 0
        assert "broken.hcl" in proc.stdout + proc.stderr
    finally:
        broken.unlink()

    # Another agent (Consul, say) already holds the HTTP port: exit at once, saying so.
    http_port, dns_port = free_ports(2)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", http_port))
        squatter.listen()
        again = subprocess.run(
            [CHROOT, "--userspec=cairn:cairn", str(root.path), "/usr/bin/cairn", "agent",
             "-config-dir=/etc/cairn.d", "-http-port", str(http_port), "-dns-port", str(dns_port)],
            capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert again.returncode != 0
    assert "address already in use" in (again.stdout + again.stderr).lower(), again.stdout + again.stderr


def test_upgrade_keeps_an_edited_config(debian_root: Root, built: Built, tmp_path: Path) -> None:
    root = debian_root
    hcl = root / "etc/cairn.d/cairn.hcl"
    hcl.write_text(hcl.read_text().replace('#datacenter = "dc1"', 'datacenter = "edited"'))
    new_version = f"{VERSION}+upgrade1"
    new = repack(built.deb, tmp_path / "cairn-new.deb", new_version, conffile_note="changed in the new version")
    deb = root.copy_in(new, "tmp/cairn-new.deb")
    # Both the admin and the package changed the file: dpkg would ask; unattended upgrades
    # answer "keep mine" with --force-confdef --force-confold (docs/install.md says so).
    out = root.sh(f"dpkg -i --force-confdef --force-confold {deb}")
    assert root.sh("dpkg-query -W -f='${Version}' cairn").stdout == new_version, out.stdout
    assert 'datacenter = "edited"' in hcl.read_text()
    assert "changed in the new version" in (root / "etc/cairn.d/cairn.hcl.dpkg-dist").read_text()
    st = hcl.stat()
    assert (st.st_gid, oct(st.st_mode & 0o777)) == (int(root.group("cairn")[2]), "0o640")
    assert list((root / "usr/lib/cairn/lib/appliance/__pycache__").glob("agent.cpython-311.pyc"))
    (root / "etc/cairn.d/cairn.hcl.dpkg-dist").unlink()


def test_remove_keeps_user_data_and_config(debian_root: Root) -> None:
    root = debian_root
    root.sh("dpkg -r cairn")
    assert not (root / "usr/bin/cairn").exists()
    assert not (root / "usr/lib/cairn").exists()  # byte code included: prerm removes what postinst made
    assert root.passwd("cairn") is not None
    assert (root / "var/lib/cairn/node-id").exists()
    assert 'datacenter = "edited"' in (root / "etc/cairn.d/cairn.hcl").read_text()
    assert root.sh("dpkg-query -W -f='${Status}' cairn").stdout == "deinstall ok config-files"


def test_purge_removes_user_data_and_config(debian_root: Root) -> None:
    root = debian_root
    root.sh("dpkg --purge cairn")
    assert root.passwd("cairn") is None and root.group("cairn") is None
    assert not (root / "var/lib/cairn").exists()
    assert not (root / "etc/cairn.d").exists()
    assert not (root / "etc/default/cairn").exists()
    assert "cairn" not in root.sh("dpkg-statoverride --list", check=False).stdout  # exits 1 when empty
    assert not (root / "etc/systemd/system/multi-user.target.wants/cairn.service").exists()


def test_apt_install_from_the_local_repository(debian_root: Root, built: Built, tmp_path: Path) -> None:
    """docs/install.md's apt flow: packaging/repo.sh, a sources.list line, `apt-get install cairn`."""
    need("apt-ftparchive", "apt-utils")
    need("createrepo_c", "createrepo-c")
    root = debian_root
    out = tmp_path / "repo"
    run(PROJECT_ROOT / "packaging" / "repo.sh", built.dist, out)
    root.copy_in(out / "apt", "srv/cairn-repo/apt")
    (root / "etc/apt/sources.list.d/cairn.list").write_text("deb [trusted=yes] file:/srv/cairn-repo/apt stable main\n")
    only_ours = "-o Dir::Etc::SourceList=/etc/apt/sources.list.d/cairn.list -o Dir::Etc::SourceParts=-"
    root.sh(f"apt-get {only_ours} update")
    policy = root.sh("apt-cache policy cairn").stdout
    assert f"Candidate: {VERSION}" in policy, policy
    root.sh(f"apt-get {only_ours} install -y --no-install-recommends cairn")
    assert f"Cairn v{VERSION}" in root.sh("cairn version").stdout
    root.sh("apt-get purge -y cairn")
    assert root.passwd("cairn") is None


# ------------------------------------------------------------------------------------ rpm


@pytest.fixture
def rpm_root(built: Built, tmp_path: Path) -> Path:
    need("rpm", "rpm")
    root = tmp_path / "rpmroot"
    run("rpm", "-i", "--root", root, "--nodeps", "--noscripts", "--dbpath", root / "var/lib/rpm",
        built.rpm, built.rpm_dnsmasq)
    return root


def test_rpm_root_has_the_same_layout_as_the_deb(rpm_root: Path, built: Built, tmp_path: Path) -> None:
    run("dpkg-deb", "-x", built.deb, tmp_path / "debroot")

    def tree(base: Path, under: str) -> set[str]:
        return {str(p.relative_to(base)) for p in (base / under).rglob("*")}

    # The payload: the same files, built for each target's glibc (identical wheels today).
    assert tree(rpm_root, "usr/lib/cairn/lib") == tree(tmp_path / "debroot", "usr/lib/cairn/lib")
    for path in ("usr/bin/cairn", "etc/cairn.d/cairn.hcl", "etc/sysconfig/cairn", "etc/dnsmasq.d/10-cairn",
                 "usr/lib/systemd/system/cairn.service", "usr/share/cairn/systemd-resolved/cairn.conf"):  # fmt: skip
        assert (rpm_root / path).is_file(), path
    assert os.access(rpm_root / "usr/bin/cairn", os.X_OK)
    assert (rpm_root / "usr/bin/cairn").read_text().startswith("#!/usr/bin/python3.11 -IS\n")
    deb_hcl = tmp_path / "debroot/etc/cairn.d/cairn.hcl"
    assert (rpm_root / "etc/cairn.d/cairn.hcl").read_bytes() == deb_hcl.read_bytes()
    queried = run("rpm", "--root", rpm_root, "--dbpath", rpm_root / "var/lib/rpm", "-qa", "--qf", "%{NAME}\n").stdout
    assert sorted(queried.split()) == ["cairn", "cairn-dnsmasq"]


def test_rpm_payload_runs_on_python_311(rpm_root: Path) -> None:
    """The el9 payload imports and runs with a CPython 3.11 (the ABI RHEL 9 / AL2023's python3.11 has)."""
    python = need("python3.11", "python3.11")
    lib = rpm_root / "usr/lib/cairn/lib"
    code = f"import sys; sys.path.insert(0, {str(lib)!r}); from appliance.cli.main import main; main(['version'])"
    out = run(python, "-IS", "-c", code).stdout
    assert f"Cairn v{VERSION}" in out
    loaded = run(python, "-IS", "-c",
                 f"import sys; sys.path.insert(0, {str(lib)!r}); import pydantic_core, orjson, aiohttp, multidict;"
                 "print(pydantic_core.__file__, orjson.__file__)").stdout  # fmt: skip
    assert str(lib) in loaded

