"""Connect's control plane against a real `cairn agent -dev`: the unmodified py-consul client's
connect, config and agent.connect APIs, the `cairn connect ca`, `cairn config` and `cairn intention`
verbs as processes (Consul's outputs and exit codes), `config_entries { bootstrap }` from an HCL
file, and `openssl verify` of a leaf against the roots the agent publishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import consul
import pytest
from conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)
CLI_TIMEOUT_S = 30.0

BOOTSTRAP = """
connect { enabled = true  ca_config { leaf_cert_ttl = "24h" } }
config_entries {
  bootstrap = [
    { kind = "proxy-defaults" name = "global" config { protocol = "http" } },
    { kind = "service-defaults" name = "db" protocol = "tcp" }
  ]
}
"""

# The examples of Consul's config entry documentation, as HCL files.
ROUTER_HCL = """
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match {
      HTTP {
        PathPrefix = "/admin"
      }
    }

    Destination {
      Service = "admin"
    }
  },
]
"""
SPLITTER_HCL = """
Kind = "service-splitter"
Name = "web"
Splits = [
  {
    Weight        = 90
    ServiceSubset = "v1"
  },
  {
    Weight        = 10
    ServiceSubset = "v2"
  },
]
"""
RESOLVER_HCL = """
Kind          = "service-resolver"
Name          = "web"
DefaultSubset = "v1"
Subsets = {
  "v1" = {
    Filter = "Service.Meta.version == v1"
  }
  "v2" = {
    Filter = "Service.Meta.version == v2"
  }
}
"""
INTENTIONS_HCL = """
Kind = "service-intentions"
Name = "db"
Sources = [
  {
    Name   = "web"
    Action = "allow"
  },
  {
    Name   = "*"
    Action = "deny"
  }
]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("connect")
    (tmp / "cairn.d").mkdir()
    (tmp / "cairn.d" / "connect.hcl").write_text(BOOTSTRAP)
    proc = AgentProcess(tmp, "-config-dir", str(tmp / "cairn.d"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def c(agent: Any) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def cairn(agent: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "appliance", *args], env=agent.env, input=stdin,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_bootstrap_entries_from_the_agent_config(c: consul.Consul) -> None:
    entry = c.config.get("proxy-defaults", "global")
    assert entry["Config"] == {"protocol": "http"}
    names = [e["Name"] for e in c.config.list("service-defaults")]
    assert names == ["db"]


def test_py_consul_ca_roots_configuration_and_leaf(c: consul.Consul, tmp_path: Path) -> None:
    roots = c.connect.ca.roots()
    assert roots["TrustDomain"].endswith(".consul") and len(roots["Roots"]) == 1
    config = c.connect.ca.configuration()
    assert config["Provider"] == "consul" and config["Config"]["leaf_cert_ttl"] == "24h"
    assert c.agent.connect.ca.roots()["ActiveRootID"] == roots["ActiveRootID"]
    leaf = c.agent.connect.ca.leaf("web")
    assert leaf["ServiceURI"] == f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    (tmp_path / "roots.pem").write_text("".join(r["RootCert"] for r in roots["Roots"]))
    (tmp_path / "web.pem").write_text(leaf["CertPEM"])
    done = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "roots.pem"), str(tmp_path / "web.pem")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "web.pem")],
                          capture_output=True, text=True, timeout=30).stdout
    assert f"URI:{leaf['ServiceURI']}" in text and "TLS Web Client Authentication" in text
    assert "Not After" in text and "prime256v1" in text


def test_connect_ca_verbs(agent: Any, tmp_path: Path) -> None:
    got = cairn(agent, "connect", "ca", "get-config")
    assert got.returncode == 0 and json.loads(got.stdout)["Provider"] == "consul"
    (tmp_path / "ca.json").write_text(json.dumps({"Provider": "consul", "Config": {"LeafCertTTL": "48h"}}))
    done = cairn(agent, "connect", "ca", "set-config", "-config-file", str(tmp_path / "ca.json"))
    assert (done.returncode, done.stdout) == (0, "Configuration updated!\n")
    assert json.loads(cairn(agent, "connect", "ca", "get-config").stdout)["Config"] == {"LeafCertTTL": "48h"}
    (tmp_path / "bad.json").write_text(json.dumps({"Provider": "consul", "Config": {"LeafCertTTL": "1m"}}))
    bad = cairn(agent, "connect", "ca", "set-config", "-config-file", str(tmp_path / "bad.json"))
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("Error setting CA configuration: Unexpected response code: 500 (error configuring "
                                  "provider: leaf cert TTL must be greater or equal than 1h0m0s)")


def test_config_write_of_documented_hcl_examples(agent: Any, c: consul.Consul, tmp_path: Path) -> None:
    for name, hcl in (("resolver", RESOLVER_HCL), ("splitter", SPLITTER_HCL), ("router", ROUTER_HCL),
                      ("intentions", INTENTIONS_HCL)):
        (tmp_path / f"{name}.hcl").write_text(hcl)
        done = cairn(agent, "config", "write", str(tmp_path / f"{name}.hcl"))
        kind = "service-intentions" if name == "intentions" else f"service-{name}"
        target = "db" if name == "intentions" else "web"
        assert (done.returncode, done.stdout) == (0, f"Config entry written: {kind}/{target}\n"), done.stderr
    read = cairn(agent, "config", "read", "-kind", "service-splitter", "-name", "web")
    assert json.loads(read.stdout)["Splits"][0] == {"Weight": 90, "ServiceSubset": "v1"}
    assert read.stdout.startswith('{\n    "Kind": "service-splitter",')
    assert cairn(agent, "config", "list", "-kind", "service-resolver").stdout == "web\n"
    missing = cairn(agent, "config", "read", "-kind", "service-defaults", "-name", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "Error reading config entry service-defaults/nope: Unexpected response code: 404 "
        '(Config entry not found for "service-defaults" / "nope")')
    # JSON with snake_case keys, from stdin; a CAS write against a stale index is refused
    done = cairn(agent, "config", "write", "-", stdin=json.dumps({"kind": "service-defaults", "name": "api",
                                                                  "protocol": "http"}))
    assert done.stdout == "Config entry written: service-defaults/api\n"
    stale = cairn(agent, "config", "write", "-cas", "-modify-index", "1", "-",
                  stdin=json.dumps({"Kind": "service-defaults", "Name": "api"}))
    assert (stale.returncode, stale.stderr.strip()) == (1, "Config entry not updated: service-defaults/api")
    # py-consul's config API sees the same entries, and deletes with and without cas
    assert c.config.set("service-defaults", "cache", {"Protocol": "grpc"}) is True
    entry = c.config.get("service-defaults", "cache")
    assert entry["Protocol"] == "grpc"
    assert c.config.delete("service-defaults", "cache", cas=entry["ModifyIndex"]) is True
    deleted = cairn(agent, "config", "delete", "-kind", "service-defaults", "-name", "api")
    assert deleted.stdout == "Config entry deleted: service-defaults/api\n"
    # py-consul's discovery_chain API: the HCL router, splitter and resolver written above
    chain = c.discovery_chain.get("web")["Chain"]
    assert chain["StartNode"] == "router:web" and chain["Protocol"] == "http"
    assert [r["NextNode"] for r in chain["Nodes"]["router:web"]["Routes"]] == [
        "resolver:admin.default.default.dc1", "splitter:web"]
    assert [s["Weight"] for s in chain["Nodes"]["splitter:web"]["Splits"]] == [90, 10]
    custom = c.discovery_chain.get("web", compile_dc="dc2", override_connect_timeout="7s")["Chain"]
    assert custom["Datacenter"] == "dc2" and custom["CustomizationHash"]
    assert {t["ConnectTimeout"] for t in custom["Targets"].values()} == {"7s"}
    bad = cairn(agent, "config", "write", "-", stdin='{"Kind": "service-defaults", "Name": "*"}')
    assert bad.returncode == 1 and "service-defaults name must be the name of a service" in bad.stderr


def test_intention_verbs_and_py_consul(agent: Any, c: consul.Consul) -> None:
    created = cairn(agent, "intention", "create", "-deny", "web", "socat")
    assert (created.returncode, created.stdout) == (0, "Created: web => socat (deny)\n"), created.stderr
    again = cairn(agent, "intention", "create", "-deny", "web", "socat")
    assert again.returncode == 1 and again.stderr.startswith('Error creating intention "web => socat (deny)": ')
    assert cairn(agent, "intention", "create", "-replace", "-allow", "web", "socat").returncode == 0
    check = cairn(agent, "intention", "check", "web", "socat")
    assert (check.returncode, check.stdout) == (0, "Allowed\n")
    assert cairn(agent, "intention", "create", "-replace", "-deny", "web", "socat").returncode == 0
    check = cairn(agent, "intention", "check", "web", "socat")
    assert (check.returncode, check.stdout) == (1, "Denied\n")
    assert cairn(agent, "intention", "check", "web").returncode == 2
    match = cairn(agent, "intention", "match", "socat")
    assert match.stdout == "web => socat (deny)\n"
    got = cairn(agent, "intention", "get", "web", "socat")
    assert "Source:      web" in got.stdout and "Action:      deny" in got.stdout
    listed = cairn(agent, "intention", "list")
    assert listed.stdout.splitlines()[0].split() == ["ID", "Source", "Action", "Destination", "Precedence"]
    # py-consul (exact-match model) sees and changes the same intentions
    assert c.connect.intentions.check("web", "socat") is False
    assert c.connect.intentions.upsert("api", "socat", action="allow") is True
    assert c.connect.intentions.read("api", "socat")["Action"] == "allow"
    assert [x["SourceName"] for x in c.connect.intentions.match("destination", "socat")["socat"]] == ["api", "web"]
    roots = c.connect.ca.roots()
    uri = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    authz = c.agent.connect.authorize("socat", uri, "01")
    assert authz["Authorized"] is False and authz["Reason"].startswith("Matched L4 intention: DENY default/web")
    assert c.connect.intentions.delete("api", "socat") is True
    deleted = cairn(agent, "intention", "delete", "web", "socat")
    assert (deleted.returncode, deleted.stdout) == (0, "Intention deleted.\n")
    assert c.connect.intentions.check("web", "socat") is True
    # the HCL entry above holds db's intentions; none is left for socat
    assert [x["DestinationName"] for x in c.connect.intentions.list()] == ["db", "db"]
