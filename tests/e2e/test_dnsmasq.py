"""dnsmasq forwarding `.consul` to the agent, with the drop-in cairn ships (DESIGN step 4).

A real dnsmasq (Debian package) is started by the test on a free loopback port, in the
foreground, with only the shipped `packaging/common/dnsmasq/10-cairn` rewritten for the agent's
DNS port; plain `dig @dnsmasq web.service.consul` must then list the healthy instances, and
`cairn maint -enable` must take the agent's own instance out. cairn answers with TTL 0, which
dnsmasq does not cache, so the change shows through dnsmasq at once.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "packaging/common/dnsmasq/10-cairn"

pytestmark = pytest.mark.skipif(
    (shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists()) or shutil.which("dig") is None,
    reason="dnsmasq or dig not installed (Debian dnsmasq, bind9-dnsutils)",
)


def dnsmasq_binary() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@pytest.fixture
def dnsmasq(agent, tmp_path):
    text = SHIPPED.read_text()
    assert "server=/consul/127.0.0.1#8600" in text
    conf = tmp_path / "10-cairn"
    conf.write_text(text.replace("127.0.0.1#8600", f"127.0.0.1#{agent.dns_port}"))
    port = free_port()
    log = open(tmp_path / "dnsmasq.log", "wb")  # noqa: SIM115 - the daemon writes it while it runs
    proc = subprocess.Popen(
        [dnsmasq_binary(), "--no-daemon", f"--port={port}", "--no-resolv", "--no-hosts", f"--conf-file={conf}",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file", f"--user={getpass.getuser()}",
         "--log-queries", "--log-facility=-"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or _answers(port, "consul", "SOA") is not None,
                   timeout=10, what="dnsmasq to answer")
        assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _answers(port: int, name: str, qtype: str = "A") -> list[str] | None:
    """dig through dnsmasq; None when dnsmasq does not answer (yet)."""
    proc = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", "+short", name, qtype],
                          capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        return None
    return sorted(line for line in proc.stdout.splitlines() if line and not line.startswith(";"))


def test_dnsmasq_forwards_consul_and_follows_maintenance(agent, dnsmasq):
    # one instance on the agent's own node (maintenance applies to it), one on another node
    code, _, text = agent.put("/v1/agent/service/register",
                              {"Name": "web", "ID": "web-local", "Port": 8080, "Address": "10.50.0.1"})
    assert code == 200, text
    code, _, text = agent.put("/v1/catalog/register",
                              {"Node": "other", "Address": "10.50.0.2",
                               "Service": {"ID": "web-other", "Service": "web", "Port": 8080}})
    assert code == 200, text
    wait_until(lambda: _answers(dnsmasq, "web.service.consul") == ["10.50.0.1", "10.50.0.2"],
               timeout=10, what="both instances through dnsmasq")
    srv = _answers(dnsmasq, "web.service.consul", "SRV")
    assert srv == ["1 1 8080 0a320001.addr.dc1.consul.", "1 1 8080 other.node.dc1.consul."]

    proc = agent.cli("maint", "-enable", "-reason", "dns test")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: _answers(dnsmasq, "web.service.consul") == ["10.50.0.2"],
               timeout=10, what="the agent's instance to leave DNS after maint -enable")
    proc = agent.cli("maint", "-disable")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: _answers(dnsmasq, "web.service.consul") == ["10.50.0.1", "10.50.0.2"],
               timeout=10, what="the agent's instance to come back after maint -disable")


def test_dnsmasq_passes_nxdomain_and_node_names(agent, dnsmasq):
    assert _answers(dnsmasq, "test-node.node.consul") == ["127.0.0.1"]
    proc = subprocess.run(["dig", "@127.0.0.1", "-p", str(dnsmasq), "+time=2", "+tries=1", "nope.service.consul"],
                          capture_output=True, text=True, timeout=20)
    assert "status: NXDOMAIN" in proc.stdout
