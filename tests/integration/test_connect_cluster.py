"""Connect across a server and a client agent (real processes on loopback): the client's first CA
call has a server bootstrap the CA, the client makes each leaf's key pair and a CSR and a server
signs it (the client holds no CA private key, the server never holds the leaf's), the leaves
verify against the roots the server publishes and carry the service's SPIFFE URI, and an
intention written on the server decides the client's authorize at once (the client's replica of
the store). Blocking leaf and intention reads on the client wake on a rotation (asked of the
client, run by a server) and an intention written through the server."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.state.snapshot import restore
from tests.harness import Cluster, http_json, wait_until
from tests.integration.test_acl_client_agent import Follower

pytestmark = pytest.mark.timeout(150)


def public_der(pem: str) -> bytes:
    """The DER of the public key of a certificate or of a private key."""
    if "PRIVATE KEY" in pem:
        key = serialization.load_pem_private_key(pem.encode(), None).public_key()
    else:
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def get(agent: Any, path: str) -> tuple[Any, Any]:
    status, headers, body = http_json("GET", f"http://{agent.http_addr}{path}")
    assert status == 200, body
    return headers, body


def test_client_agent_gets_leaves_from_a_server_and_sees_intentions(tmp_path: Path) -> None:
    with Cluster(tmp_path, servers=1, clients=1).start() as cluster:
        server, client = cluster.servers[0], cluster.clients[0]
        wait_until(lambda: server.leader() and client.leader(), timeout=40, what="a leader known to both")
        _, leaf = get(client, "/v1/agent/connect/ca/leaf/web")  # the first CA call: a server bootstraps
        _, roots = get(server, "/v1/connect/ca/roots")
        uri = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
        assert leaf["ServiceURI"] == uri
        (tmp_path / "roots.pem").write_text("".join(r["RootCert"] for r in roots["Roots"]))
        (tmp_path / "web.pem").write_text(leaf["CertPEM"])
        done = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "roots.pem"),
                               str(tmp_path / "web.pem")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "web.pem"), "-noout", "-ext",
                               "subjectAltName"], capture_output=True, text=True, timeout=30)
        assert f"URI:{uri}" in text.stdout, text.stdout + text.stderr
        # the client made the key pair and a CSR, the server signed it: the server's own leaf for web
        # is another key, and the client's certificate is for the key the client holds
        own = get(server, "/v1/agent/connect/ca/leaf/web")[1]
        assert own["SerialNumber"] != leaf["SerialNumber"] and own["PrivateKeyPEM"] != leaf["PrivateKeyPEM"]
        assert public_der(leaf["CertPEM"]) == public_der(leaf["PrivateKeyPEM"])
        headers, again = get(client, "/v1/agent/connect/ca/leaf/web")  # then the client's cache answers
        assert again["SerialNumber"] == leaf["SerialNumber"] and headers["X-Cache"] == "HIT"
        # no CA private key on the client: not in what it shows, not in its data directory
        _, config = get(client, "/v1/connect/ca/configuration")  # answered by a server
        assert config["Provider"] == "consul"
        for path in client.data_dir.rglob("*"):
            assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path
        probe = Follower(server.server_addr)  # what a client agent's replica is sent: roots without keys
        _, _, _, data = probe.until("snapshot")
        assert restore(data).connect.roots and not restore(data).connect.keys

        # a blocking intention match on the client wakes on a write made through the server
        headers, _ = get(client, "/v1/connect/intentions/match?by=destination&name=db")
        woke: dict[str, Any] = {}

        def wait() -> None:
            woke["answer"] = get(client, "/v1/connect/intentions/match?by=destination&name=db"
                                         f"&index={headers['X-Consul-Index']}&wait=20s")[1]

        waiter = threading.Thread(target=wait)
        waiter.start()
        status, _, body = http_json("PUT", f"http://{server.http_addr}/v1/connect/intentions/exact"
                                           "?source=web&destination=db", {"Action": "deny"})
        assert (status, body) == (200, True)
        waiter.join(25)
        assert [x["Action"] for x in woke["answer"]["db"]] == ["deny"]
        status, _, authz = http_json("POST", f"http://{client.http_addr}/v1/agent/connect/authorize",
                                     {"Target": "db", "ClientCertURI": leaf["ServiceURI"]})
        assert status == 200 and authz["Authorized"] is False, authz

        # a rotation through the server renews the client's leaf for a blocked watcher
        renewed: dict[str, Any] = {}

        def watch() -> None:
            renewed["leaf"] = get(client, f"/v1/agent/connect/ca/leaf/web?index={leaf['ModifyIndex']}&wait=60s")[1]

        watcher = threading.Thread(target=watch)
        watcher.start()
        status, _, body = http_json("PUT", f"http://{client.http_addr}/v1/connect/ca/configuration",
                                    {"Provider": "consul", "Config": {"PrivateKeyBits": 384}})  # run by a server
        assert status == 200, body
        watcher.join(60)  # renewed within the 30 s jitter window
        _, rotated = get(server, "/v1/connect/ca/roots")
        for _ in range(200):  # frames until the rotation's entry (a status frame comes every 0.5 s)
            if rotated["ActiveRootID"].encode() in probe.raw:
                break
            probe.frame()
        probe.close()
        assert rotated["ActiveRootID"].encode() in probe.raw
        assert b"PRIVATE KEY" not in probe.raw
        new = renewed["leaf"]
        assert new["SerialNumber"] != leaf["SerialNumber"]
        _, roots = get(client, "/v1/agent/connect/ca/roots")
        assert len(roots["Roots"]) == 2
        (tmp_path / "new.pem").write_text(new["CertPEM"])
        (tmp_path / "old-root.pem").write_text(roots["Roots"][0]["RootCert"])
        done = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "old-root.pem"), "-untrusted",
                               str(tmp_path / "new.pem"), str(tmp_path / "new.pem")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr  # through the cross-signed root
        (tmp_path / "new-root.pem").write_text(roots["Roots"][1]["RootCert"])
        done = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "new-root.pem"),
                               str(tmp_path / "new.pem")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr  # the new leaf chains to the new root
        assert roots["Roots"][1]["Active"] and new["ServiceURI"] == uri
