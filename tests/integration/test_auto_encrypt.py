"""auto_encrypt end to end: a client agent with no certificate of its own gets one from a server.

A server with TLS everywhere (a `cairn tls cert create`-style server certificate, verify_incoming,
verify_outgoing, verify_server_hostname), ACLs denying by default and `auto_encrypt { allow_tls =
true }`; a client agent configured with only `auto_encrypt { tls = true }`, the CA file, the same
verify settings and an agent token (real processes on loopback). What is shown:
- the client asks for its certificate on a connection without a client certificate, is signed
  (node:write on its node), and with that certificate passes the server's verify_incoming: it
  follows the server, and a service registered on it reaches the server's catalog;
- the certificate it serves on its HTTPS port (`openssl s_client`) carries its agent SPIFFE URI,
  chains to the Connect root (`openssl verify`) and its key is nowhere on the client's disk;
- a Connect certificate passes the server's handshake but is refused for server-to-server frames;
- a client whose token lacks node:write does not start: Consul's permission text in its log;
- a server with allow_tls off refuses (Consul's `AutoEncrypt.AllowTLS must be enabled in order to
  use this endpoint`) and the client does not start; on a connection without a client
  certificate the server answers nothing but AutoEncrypt.Sign (a replica stream is refused);
- the client renews its certificate between 60% and 90% of its lifetime, over mutual TLS with
  the certificate it holds (in process, against a port that signs for 4 s);
- the configuration rules: auto_encrypt.tls on a server and allow_tls on a client are errors
  with Consul's texts; a client with auto_encrypt.tls needs no cert_file for verify_incoming.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.config import ConfigError, build_agent_config
from appliance.connect import ca, csr, spiffe
from appliance.rpc.autoencrypt import AutoEncrypt
from appliance.rpc.frames import HEADER, Kind, decode_body, encode_frame, parse_header
from appliance.tls import certs, context
from appliance.tls.context import RPC_TLS, RPC_TLS_INSECURE
from tests.harness import Agent, free_port, http_json, server_args, wait_until
from tests.integration.test_tls import write_pki

pytestmark = pytest.mark.timeout(180)
MANAGEMENT = str(uuid.uuid4())


def call(agent: Agent, method: str, path: str, body: Any = None, token: str = MANAGEMENT) -> tuple[int, Any]:
    status, _, out = http_json(method, f"http://{agent.http_addr}{path}", body,
                               headers={"X-Consul-Token": token} if token else None, timeout=15)
    return status, out


def server_hcl(pki: dict[str, Path], allow_tls: bool) -> str:
    return (f'tls {{ defaults {{ ca_file = "{pki["ca"]}" cert_file = "{pki["server"]}" '
            f'key_file = "{pki["server_key"]}" verify_incoming = true verify_outgoing = true }} '
            'internal_rpc { verify_server_hostname = true } } '
            f'auto_encrypt {{ allow_tls = {str(allow_tls).lower()} }} '
            f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{MANAGEMENT}" }} }}')


def client_agent(tmp_path: Path, name: str, server: Agent, pki: dict[str, Path], token: str,
                 https: int = -1) -> Agent:
    hcl = (f'tls {{ defaults {{ ca_file = "{pki["ca"]}" verify_incoming = true verify_outgoing = true }} '
           'internal_rpc { verify_server_hostname = true } } auto_encrypt { tls = true } '
           f'ports {{ https = {https} }} '
           f'acl {{ enabled = true default_policy = "deny" tokens {{ agent = "{token}" }} }}')
    client = Agent(tmp_path, name, "-hcl", hcl)
    client.ports[2] = client.server_port = server.server_port  # auto_encrypt dials join hosts on ports.server
    client.join = [server.lan_addr]
    return client


def led(agent: Agent) -> bool:
    try:
        return bool(call(agent, "GET", "/v1/status/leader")[1])
    except OSError:
        return False


def answers(agent: Agent) -> bool:
    try:
        http_json("GET", f"http://{agent.http_addr}/v1/status/leader", timeout=2)
        return True
    except OSError:
        return False


def node_token(server: Agent, node: str) -> dict[str, Any]:
    status, out = call(server, "PUT", "/v1/acl/token", {"NodeIdentities": [{"NodeName": node, "Datacenter": "dc1"}]})
    assert status == 200, out
    return dict(out)


def test_client_agent_gets_its_certificate_and_joins(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    server = Agent(tmp_path, "s1", *server_args(1, server_hcl(pki, allow_tls=True)))
    https = free_port(udp=False)
    try:
        server.start()
        wait_until(lambda: led(server), timeout=40, what="a leader")
        # a token without node:write on its node: the client is refused and does not start
        status, web = call(server, "PUT", "/v1/acl/token", {"ServiceIdentities": [{"ServiceName": "web"}]})
        assert status == 200, web
        weak = client_agent(tmp_path, "c2", server, pki, web["SecretID"])
        weak.start()
        denied = (f"Permission denied: token with AccessorID '{web['AccessorID']}' "
                  "lacks permission 'node:write' on \"c2\"")
        wait_until(lambda: denied in weak.log(), timeout=30, what="the permission error")
        assert f'AutoEncrypt.Sign RPC failed: addr={server.server_addr} error="rpc error making call: {denied}"' \
            in weak.log()
        assert "No servers successfully responded to the auto-encrypt request" in weak.log()
        assert weak.alive() and not answers(weak) and "Consul agent running!" not in weak.log()
        assert weak.stop(check=True) == 0  # SIGTERM while it waits: a clean exit
        assert "interrupted during retrieval of auto-encrypt certificates" in weak.log()

        # the agent's node token: signed, and the client joins with that certificate alone
        node = node_token(server, "c1")
        client = client_agent(tmp_path, "c1", server, pki, node["SecretID"], https=https)
        client.start()
        wait_until(lambda: "automatically upgraded to TLS" in client.log(), timeout=40, what="the certificate")
        wait_until(lambda: answers(client), timeout=40, what="the client agent's HTTP API")
        wait_until(lambda: call(client, "GET", "/v1/status/leader")[1] == server.server_addr, timeout=40,
                   what="the client following the server over mutual TLS")
        status, out = call(client, "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 8080},
                           token=web["SecretID"])
        assert status == 200, out
        wait_until(lambda: any(s["Node"] == "c1" for s in call(server, "GET", "/v1/catalog/service/web")[1] or []),
                   timeout=40, what="web in the server's catalog")

        # the certificate on the client's HTTPS port: its agent SPIFFE ID, chained to the Connect root
        roots = call(server, "GET", "/v1/connect/ca/roots")[1]
        (tmp_path / "connect-roots.pem").write_text("".join(r["RootCert"] for r in roots["Roots"]))
        shown = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{https}", "-CAfile", str(pki["ca"]),
             "-cert", str(pki["client"]), "-key", str(pki["client_key"]), "-showcerts"],
            input="", capture_output=True, text=True, timeout=30)
        pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", shown.stdout, re.S)
        assert pems, shown.stdout + shown.stderr
        (tmp_path / "agent.pem").write_text(pems[0])
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "connect-roots.pem"),
                                   str(tmp_path / "agent.pem")], capture_output=True, text=True, timeout=30)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "agent.pem"), "-noout", "-ext",
                               "subjectAltName"], capture_output=True, text=True, timeout=30).stdout
        assert f"URI:{spiffe.agent_uri(roots['TrustDomain'], 'dc1', 'c1')}" in text, text
        assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
        for path in client.data_dir.rglob("*"):  # the key stays in memory
            assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path
        client.stop()

        # a certificate from the Connect CA passes the handshake but never sends server traffic
        key = ca.generate_key()
        status, issued = call(server, "PUT", "/v1/internal/connect/ca/sign",
                              {"CSR": csr.make(spiffe.agent_uri(roots["TrustDomain"], "dc1", "c9"), key)})
        assert status == 200, issued
        (tmp_path / "c9.pem").write_text(issued["CertPEM"])
        (tmp_path / "c9-key.pem").write_text(ca.key_pem(key))
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(tmp_path / "c9.pem"), str(tmp_path / "c9-key.pem"))
        raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        raw.sendall(bytes([RPC_TLS]))
        with ctx.wrap_socket(raw) as conn:
            conn.sendall(encode_frame([Kind.HELLO, "c9"]))
            assert conn.recv(1024) == b""
        wait_until(lambda: "its certificate is a Connect certificate" in server.log(), timeout=10,
                   what="the refusal logged")
    finally:
        server.stop()


def test_server_without_allow_tls_refuses(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    server = Agent(tmp_path, "s1", *server_args(1, server_hcl(pki, allow_tls=False)))
    try:
        server.start()
        wait_until(lambda: led(server), timeout=40, what="a leader")
        client = client_agent(tmp_path, "c1", server, pki, node_token(server, "c1")["SecretID"])
        client.start()
        refused = (f'AutoEncrypt.Sign RPC failed: addr={server.server_addr} error="rpc error making call: '
                   'AutoEncrypt.AllowTLS must be enabled in order to use this endpoint"')
        wait_until(lambda: refused in client.log(), timeout=30, what="the refusal")
        assert client.alive() and not answers(client) and "Consul agent running!" not in client.log()
        assert client.stop(check=True) == 0
        # without a client certificate the server takes AutoEncrypt.Sign only: a replica stream is refused
        host, port = server.server_addr.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        ctx.check_hostname = False
        raw = socket.create_connection((host, int(port)), timeout=5)
        raw.sendall(bytes([RPC_TLS_INSECURE]))
        with ctx.wrap_socket(raw) as conn:  # the handshake succeeds without a certificate
            conn.sendall(encode_frame([Kind.FOLLOW, 0, "intruder"]))
            assert conn.recv(1024) == b""  # closed, nothing streamed
        wait_until(lambda: "only AutoEncrypt.Sign is allowed" in server.log(), timeout=10, what="the refusal logged")
    finally:
        server.stop()


def build(tmp_path: Path, cfg: dict[str, Any], *flags: str) -> Any:
    path = tmp_path / "auto.json"
    path.write_text(json.dumps(cfg))
    return build_agent_config(["-data-dir", str(tmp_path), "-config-file", str(path), *flags], hostname="testhost")


@pytest.mark.parametrize("cfg,flags,text", [
    ({"auto_encrypt": {"tls": True}}, ("-server",), "auto_encrypt.tls can only be used on a client."),
    ({"auto_encrypt": {"allow_tls": True}}, (), "auto_encrypt.allow_tls can only be used on a server."),
    ({"auto_encrypt": {"tls": True, "ip_san": ["nope"]}}, (), "auto_encrypt.ip_san: invalid ip address: nope"),
    ({"tls": {"defaults": {"verify_incoming": True, "cert_file": "c", "key_file": "k"}}}, (),
     "verify_incoming set but no CA certificates were provided"),
])
def test_config_rules(tmp_path: Path, cfg: dict[str, Any], flags: tuple[str, ...], text: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(tmp_path, cfg, *flags)
    assert text in str(err.value)


def test_config_accepted(tmp_path: Path) -> None:
    client = build(tmp_path, {"auto_encrypt": {"tls": True, "dns_san": ["a.example"], "ip_san": ["10.0.0.9"]},
                              "tls": {"defaults": {"ca_file": "ca.pem", "verify_incoming": True,
                                                   "verify_outgoing": True}}})
    assert client.tls.auto_encrypt_tls and client.tls.auto_encrypt_dns_san == ("a.example",)
    assert client.tls.auto_encrypt_ip_san == ("10.0.0.9",)
    server = build(tmp_path, {"auto_encrypt": {"allow_tls": True}}, "-server")
    assert server.tls.auto_encrypt_allow_tls
    assert any("if auto_encrypt.allow_tls is turned on, tls.internal_rpc.verify_incoming should be enabled" in w
               for w in server.config_warnings)


class FakeServer:
    """A server RPC port that signs auto_encrypt CSRs with certificates valid for `ttl_s` seconds
    from now, and records each connection's first byte and the client certificate it presented."""

    def __init__(self, pki: dict[str, Path], ttl_s: float) -> None:
        root = certs.make_ca()
        self.root_pem = root.cert_pem.decode()
        self.root_key = serialization.load_pem_private_key(root.key_pem, password=None)
        self.ttl_s = ttl_s
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
        self.ctx.load_verify_locations(cadata=self.root_pem)
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.seen: list[tuple[int, Any]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # until the listener is closed
            while True:
                self._answer(self.listener.accept()[0])

    def _answer(self, raw: socket.socket) -> None:
        with raw:
            marker = raw.recv(1)[0]
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                self.seen.append((marker, conn.getpeercert()))
                with conn.makefile("rb") as stream:
                    body = decode_body(stream.read(parse_header(stream.read(HEADER.size))))[1]
                req = csr.parse(body["CSR"])
                uri = csr.place(req, "11111111-2222-3333-4444-555555555555.consul", "dc1")
                assert isinstance(self.root_key, ec.EllipticCurvePrivateKey)
                leaf = csr.sign(self.root_key, self.root_pem, req, uri, len(self.seen),
                                time.time() + ca.CLOCK_SKEW_S, self.ttl_s)
                conn.sendall(encode_frame([Kind.AUTO_ENCRYPT, {"Reply": {
                    "IssuedCert": {"CertPEM": leaf.cert_pem}, "ConnectCARoots": {"Roots": [
                        {"RootCert": self.root_pem}]}, "ManualCARoots": [], "VerifyServerHostname": False}}]))

    def close(self) -> None:
        self.listener.close()


def test_certificate_renewed_before_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client half in this process against a server port that signs for 4 s: the first
    certificate comes over a connection without a client certificate (RPC_TLS_INSECURE), the
    renewal at 60-90% of its lifetime over mutual TLS with it, and the new one is installed."""
    pki = write_pki(tmp_path / "pki")
    for name, value in (("_current", context.Contexts()), ("_config", None), ("_auto", context.AutoCert())):
        monkeypatch.setattr(context, name, value)  # this process's TLS state, restored afterwards
    server = FakeServer(pki, ttl_s=4.0)
    cfg = build(tmp_path, {"node_name": "c1", "auto_encrypt": {"tls": True},
                           "tls": {"defaults": {"ca_file": str(pki["ca"])}}})
    context.install(cfg)
    client = AutoEncrypt(lambda: cfg, token=lambda: "", servers=lambda: [server.address], roots=lambda: "",
                         wait_roots=asyncio.sleep)

    async def run() -> tuple[str, str, float]:
        await asyncio.wait_for(client.initial(), 10)
        first = context.auto_cert().cert_pem
        assert client.signed is not None
        valid_after = client.signed.valid_after  # whole seconds, as certificates carry them
        task = asyncio.create_task(client.serve())
        while client.renewed == 0 and time.time() - valid_after < 10:
            await asyncio.sleep(0.02)
        task.cancel()
        return first, context.auto_cert().cert_pem, time.time() - valid_after

    try:
        first, renewed, waited = asyncio.run(run())
    finally:
        server.close()
    assert client.renewed == 1 and renewed != first
    assert 4.0 * 0.6 <= waited <= 4.0 + 1.0, waited  # at 60-90% of its life (room for a busy machine)
    (initial_marker, initial_cert), (renew_marker, renew_cert) = server.seen[:2]
    assert initial_marker == RPC_TLS_INSECURE and not initial_cert  # no client certificate yet
    assert renew_marker == RPC_TLS and any(kind == "URI" and value.endswith("/agent/client/dc/dc1/id/c1")
                                           for kind, value in renew_cert["subjectAltName"])
    assert context.current().rpc_client is not None and context.auto_cert().roots == (server.root_pem,)
