"""TLS on real agents: HTTPS with client certificates (curl, openssl s_client, plain HTTP to the
TLS port, another CA, an expired certificate), certificates swapped on SIGHUP, and a cluster of
three servers and a client agent with mutual TLS and hostname checks on the RPC port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from appliance.config import build_agent_config
from appliance.rpc.connection import dial
from appliance.rpc.frames import Kind, encode_frame
from appliance.rpc.listener import RpcListener
from appliance.tls import certs, context
from appliance.tls.accept import Acceptor, Choice
from tests.conftest import AgentProcess
from tests.harness import Agent, Cluster, free_port, server_args, wait_until

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None,
                                reason="needs curl and openssl")


def write_pki(d: Path, ca_name: str = "consul-agent-ca") -> dict[str, Path]:
    """A CA and server, client and cli certificates of dc1 in `d` (as `cairn tls` makes them)."""
    d.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca()
    files = {"ca": d / f"{ca_name}.pem", "ca_key": d / f"{ca_name}-key.pem"}
    files["ca"].write_bytes(ca.cert_pem)
    files["ca_key"].write_bytes(ca.key_pem)
    ca_cert, ca_key = certs.load_ca(ca.cert_pem, ca.key_pem)
    for kind in ("server", "client"):
        leaf = certs.make_leaf(kind, ca_cert, ca_key)
        (d / f"{kind}.pem").write_bytes(leaf.cert_pem)
        (d / f"{kind}-key.pem").write_bytes(leaf.key_pem)
        files[kind], files[f"{kind}_key"] = d / f"{kind}.pem", d / f"{kind}-key.pem"
    expired = certs.make_leaf("client", ca_cert, ca_key, days=1,
                              now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10))
    (d / "expired.pem").write_bytes(expired.cert_pem)
    (d / "expired-key.pem").write_bytes(expired.key_pem)
    files["expired"], files["expired_key"] = d / "expired.pem", d / "expired-key.pem"
    return files


@pytest.fixture
def pki(tmp_path):
    return write_pki(tmp_path / "pki")


def https_agent(tmp_path: Path, pki: dict[str, Path], verify_incoming: bool = True) -> tuple[AgentProcess, int]:
    port = free_port(udp=False)
    cfg = {"ports": {"https": port},
           "tls": {"defaults": {"ca_file": str(pki["ca"]), "cert_file": str(pki["server"]),
                                "key_file": str(pki["server_key"])},
                   "https": {"verify_incoming": verify_incoming}}}
    path = tmp_path / "tls.json"
    path.write_text(json.dumps(cfg))
    return AgentProcess(tmp_path, "-config-file", str(path)), port


def curl(port: int, pki: dict[str, Path], *extra: str, path: str = "/v1/status/leader"):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki["ca"]), *extra,
                           f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True)


def test_https_with_client_certificates(tmp_path, pki):
    agent, port = https_agent(tmp_path, pki)
    try:
        ok = curl(port, pki, "--cert", str(pki["client"]), "--key", str(pki["client_key"]))
        assert ok.returncode == 0 and json.loads(ok.stdout), ok.stderr
        # without a client certificate: the handshake (TLS 1.3: the first read) fails
        assert curl(port, pki).returncode != 0
        # a certificate from another CA, and an expired one from the right CA
        other = write_pki(tmp_path / "other")
        assert curl(port, pki, "--cert", str(other["client"]), "--key", str(other["client_key"])).returncode != 0
        assert curl(port, pki, "--cert", str(pki["expired"]), "--key", str(pki["expired_key"])).returncode != 0
        # the client refuses a server whose certificate another CA signed
        assert curl(port, other, "--cert", str(pki["client"]), "--key", str(pki["client_key"])).returncode != 0
        # openssl s_client shows the handshake, the server's names and the CA's verdict
        shown = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki["ca"]),
                                "-cert", str(pki["client"]), "-key", str(pki["client_key"]), "-servername",
                                "server.dc1.consul", "-verify_hostname", "server.dc1.consul", "-brief"],
                               input="", capture_output=True, text=True, timeout=20)
        assert "Verification: OK" in shown.stderr, shown.stderr
        assert "CN = server.dc1.consul" in shown.stderr or "CN=server.dc1.consul" in shown.stderr
        # plain HTTP to the HTTPS port: Go's answer, then the connection is closed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
        assert agent.get("/v1/status/leader")[0] == 200  # plain HTTP on its own port goes on
    finally:
        agent.stop()


def test_https_without_verify_incoming_needs_no_client_certificate(tmp_path, pki):
    agent, port = https_agent(tmp_path, pki, verify_incoming=False)
    try:
        out = curl(port, pki, path="/v1/agent/self")
        assert out.returncode == 0 and json.loads(out.stdout)["Config"]["NodeName"] == "test-node"
    finally:
        agent.stop()


def peer_serial(conn: http.client.HTTPSConnection) -> int:
    der = conn.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_swaps_certificates_and_keeps_connections(tmp_path, pki):
    agent, port = https_agent(tmp_path, pki, verify_incoming=False)
    try:
        client = ssl.create_default_context(cafile=str(pki["ca"]))
        client.check_hostname = False
        old = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
        old.request("GET", "/v1/status/leader")
        assert old.getresponse().read()
        first = peer_serial(old)
        ca_cert, ca_key = certs.load_ca(pki["ca"].read_bytes(), pki["ca_key"].read_bytes())
        new = certs.make_leaf("server", ca_cert, ca_key)
        pki["server"].write_bytes(new.cert_pem)
        pki["server_key"].write_bytes(new.key_pem)
        agent.signal(signal.SIGHUP)
        wait_until(lambda: "Reloaded configuration" in agent.log_path.read_text(), what="reload")

        fresh = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
        fresh.request("GET", "/v1/status/leader")
        assert fresh.getresponse().status == 200
        assert peer_serial(fresh) == x509.load_pem_x509_certificate(new.cert_pem).serial_number != first
        old.request("GET", "/v1/status/leader")  # the keep-alive connection from before still works
        assert old.getresponse().status == 200 and peer_serial(old) == first
        # a reload with a broken key fails and keeps the certificate in place
        pki["server_key"].write_bytes(b"not a key")
        agent.signal(signal.SIGHUP)
        wait_until(lambda: "Failed to reload configs" in agent.log_path.read_text(), what="failed reload")
        again = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
        again.request("GET", "/v1/status/leader")
        assert again.getresponse().status == 200 and peer_serial(again) == peer_serial(fresh)
        for conn in (old, fresh, again):
            conn.close()
    finally:
        agent.stop()


def rpc_hcl(pki: dict[str, Path], kind: str) -> str:
    return (f'tls {{ defaults {{ ca_file = "{pki["ca"]}" cert_file = "{pki[kind]}" key_file = "{pki[kind + "_key"]}" '
            'verify_incoming = true verify_outgoing = true } internal_rpc { verify_server_hostname = true } }')


def rpc_tls_socket(address: str, pki: dict[str, Path], kind: str) -> ssl.SSLSocket:
    """A TLS connection to a server's RPC port (the RPC_TLS byte, then the handshake)."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki[kind]), str(pki[kind + "_key"]))
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(b"\x03")
    return ctx.wrap_socket(raw)


class RpcRelay:
    """A loopback port that prefixes each connection with the RPC_TLS byte and relays it to a
    server's RPC port, so `openssl s_client` can shake hands with the RPC port's TLS."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            upstream.sendall(b"\x03")
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def s_client(port: int, pki: dict[str, Path], *extra: str) -> str:
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki["ca"]),
                          "-verify_hostname", "server.dc1.consul", "-brief", *extra],
                         input="", capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


@pytest.mark.timeout(120)
def test_cluster_with_mutual_tls_on_the_rpc_port(tmp_path, pki):
    cluster = Cluster(tmp_path, servers=3, clients=1, server_extra=["-hcl", rpc_hcl(pki, "server")],
                      client_extra=["-hcl", rpc_hcl(pki, "client")])
    servers, (client,) = cluster.servers, cluster.clients
    with cluster.start():
        wait_until(lambda: all(s.leader() for s in servers), timeout=60, what="a leader")
        wait_until(lambda: client.kv_put("tls/key", "through-the-client"), timeout=60, what="a write via the client")
        assert wait_until(lambda: servers[0].kv_get("tls/key"), what="the write on a server") == b"through-the-client"
        target = servers[0].server_addr

        # openssl s_client on the RPC port: the server's certificate verifies for server.dc1.consul ...
        relay = RpcRelay(target)
        try:
            shown = s_client(relay.port, pki, "-cert", str(pki["client"]), "-key", str(pki["client_key"]))
            assert "Verification: OK" in shown and "Verified peername: server.dc1.consul" in shown, shown
            # ... and without a client certificate the server ends the handshake (verify_incoming)
            refused = s_client(relay.port, pki, "-tls1_2")
            assert "CONNECTION ESTABLISHED" not in refused and "SSL routines" in refused, refused
        finally:
            relay.close()

        # plain frames are refused when verify_incoming is set
        with socket.create_connection(target.rsplit(":", 1), timeout=5) as plain:
            plain.sendall(encode_frame([Kind.HELLO, "x", "127.0.0.1:1", 0, []]))
            assert closed_by_peer(plain)
        # a client certificate is a valid certificate, but not a server's: server-to-server frames are refused
        with rpc_tls_socket(target, pki, "client") as rogue:
            rogue.sendall(encode_frame([Kind.HELLO, "rogue", "127.0.0.1:1", 0, []]))
            assert closed_by_peer(rogue)
        wait_until(lambda: "refusing server RPC" in servers[0].log(), what="the refusal logged")
        # a certificate from another CA does not get through the handshake
        other = write_pki(tmp_path / "other")
        with (pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)),
              rpc_tls_socket(target, other, "server") as stranger):
            stranger.sendall(encode_frame([Kind.HELLO, "x", "127.0.0.1:1", 0, []]))
            if closed_by_peer(stranger):
                raise ConnectionResetError
        assert client.kv_put("tls/after", "still-fine")  # the cluster is unharmed


def test_outgoing_rpc_checks_the_server_name(tmp_path, pki):
    """verify_server_hostname: a peer presenting a client certificate is not accepted as a server."""

    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps({"tls": {"defaults": {
        "ca_file": str(pki["ca"]), "cert_file": str(pki["client"]), "key_file": str(pki["client_key"]),
        "verify_outgoing": True}, "internal_rpc": {"verify_server_hostname": True}}}))
    cfg = build_agent_config(["-dev", "-config-file", str(cfg_path)], hostname="t")

    async def serve_with(kind: str) -> str:
        listen = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        listen.load_cert_chain(str(pki[kind]), str(pki[kind + "_key"]))

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"ok")
            await writer.drain()

        server = Acceptor(host="127.0.0.1", port=0, choose=lambda first: Choice(tls=listen, consume=1),
                          protocol_factory=lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(), on_conn))
        await server.start()
        try:
            reader, writer = await dial(f"127.0.0.1:{server.port}", 8300, 5.0)
            data = await reader.readexactly(2)
            writer.close()
            return data.decode()
        except ssl.SSLCertVerificationError as err:
            return err.verify_message
        finally:
            server.close()

    before = context.current()
    context.install(cfg)
    try:
        assert asyncio.run(serve_with("server")) == "ok"
        assert "Hostname mismatch" in asyncio.run(serve_with("client"))
    finally:
        context._current = before


def test_cli_over_https_with_environment_and_flags(tmp_path, pki):
    agent, port = https_agent(tmp_path, pki)
    try:
        def cli(*args: str, **env: str):
            run_env = {**agent.env, "CONSUL_HTTP_ADDR": f"127.0.0.1:{port}", "CAIRN_HTTP_ADDR": "", **env}
            return subprocess.run([sys.executable, "-m", "appliance", *args], env=run_env, capture_output=True,
                                  text=True, timeout=30)

        tls_env = {"CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": str(pki["ca"]),
                   "CONSUL_CLIENT_CERT": str(pki["client"]), "CONSUL_CLIENT_KEY": str(pki["client_key"])}
        put = cli("kv", "put", "tls/cli", "v", **tls_env)
        assert put.returncode == 0, put.stderr
        assert cli("kv", "get", "tls/cli", **tls_env).stdout == "v\n"
        # the flags instead of the environment, an https:// address instead of CONSUL_HTTP_SSL
        flags = ["-http-addr", f"https://127.0.0.1:{port}", "-ca-file", str(pki["ca"]),
                 "-client-cert", str(pki["client"]), "-client-key", str(pki["client_key"])]
        assert cli("kv", "get", *flags, "tls/cli").stdout == "v\n"
        assert cli("kv", "get", *flags, "-tls-server-name", "server.dc1.consul", "tls/cli").stdout == "v\n"
        wrong = cli("kv", "get", *flags, "-tls-server-name", "server.dc2.consul", "tls/cli")
        assert wrong.returncode == 1 and "tls: failed to verify certificate: Hostname mismatch" in wrong.stderr
        # no client certificate: the agent refuses the connection
        no_cert = cli("kv", "get", "tls/cli", CONSUL_HTTP_SSL="true", CONSUL_CACERT=str(pki["ca"]))
        assert no_cert.returncode == 1 and "Error connecting to Consul agent" in no_cert.stderr
        # the agent's certificate is not trusted without the CA, unless verification is off
        untrusted = cli("kv", "get", "tls/cli", **{**tls_env, "CONSUL_CACERT": ""})
        assert untrusted.returncode == 1 and "tls: failed to verify certificate: " in untrusted.stderr
        skip = cli("kv", "get", "tls/cli", **{**tls_env, "CONSUL_CACERT": "", "CONSUL_HTTP_SSL_VERIFY": "false"})
        assert skip.stdout == "v\n", skip.stderr
    finally:
        agent.stop()


@pytest.mark.timeout(120)
def test_a_client_certificate_cannot_join_as_a_server(tmp_path, pki):
    """A machine holding only a client certificate, started as a server, gets nothing: servers
    refuse its server-to-server frames and it cannot pass their hostname check either."""
    cluster = Cluster(tmp_path, servers=3, server_extra=["-hcl", rpc_hcl(pki, "server")])
    servers = cluster.servers
    rogue = Agent(tmp_path, "rogue", *server_args(3, rpc_hcl(pki, "client")), join=cluster.join)
    try:
        cluster.start()
        wait_until(lambda: all(s.leader() for s in servers), timeout=60, what="a leader")
        assert servers[0].kv_put("tls/secret", "for-servers-only")
        rogue.start()
        wait_until(lambda: "refusing server RPC" in "".join(s.log() for s in servers), timeout=30,
                   what="the rogue refused")
        # and the servers that dial it see a certificate without their server name
        wait_until(lambda: "Hostname mismatch" in "".join(s.log() for s in servers), timeout=30,
                   what="the hostname check")
        relay = RpcRelay(rogue.server_addr)  # openssl's view of the rogue: not server.dc1.consul
        try:
            shown = s_client(relay.port, pki, "-cert", str(pki["server"]), "-key", str(pki["server_key"]))
            assert "hostname mismatch" in shown, shown
        finally:
            relay.close()
        time.sleep(3)  # time enough for Raft to have replicated to it, were it accepted
        assert rogue.leader() == ""
        try:
            got = rogue.kv_get("tls/secret", "&stale")  # no leader, no data: the stale read finds nothing
        except OSError:
            got = None
        assert got is None
        assert servers[1].kv_put("tls/after", "fine")
    finally:
        rogue.stop()
        cluster.stop()


def test_rpc_certificates_swap_on_reinstall_and_open_connections_stay(tmp_path, pki):
    """What SIGHUP does for the RPC port: the next connection gets the new certificate, a
    connection already open goes on with the old one."""

    cfg_path = tmp_path / "s.json"
    cfg_path.write_text(json.dumps({"tls": {"defaults": {
        "ca_file": str(pki["ca"]), "cert_file": str(pki["server"]), "key_file": str(pki["server_key"]),
        "verify_incoming": True, "verify_outgoing": True}, "internal_rpc": {"verify_server_hostname": True}}}))
    cfg = build_agent_config(["-dev", "-config-file", str(cfg_path)], hostname="t")
    frames: list[list] = []

    def serial(writer: asyncio.StreamWriter) -> int:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def main() -> None:
        port = free_port(udp=False)
        listener = RpcListener(bind="127.0.0.1", port=port, on_frame=frames.append)
        await listener.start()
        try:
            _, old = await dial(f"127.0.0.1:{port}", port, 5.0)
            first = serial(old)
            ca_cert, ca_key = certs.load_ca(pki["ca"].read_bytes(), pki["ca_key"].read_bytes())
            new = certs.make_leaf("server", ca_cert, ca_key)
            pki["server"].write_bytes(new.cert_pem)
            pki["server_key"].write_bytes(new.key_pem)
            context.install(cfg)  # what Agent.reload does
            _, fresh = await dial(f"127.0.0.1:{port}", port, 5.0)
            assert serial(fresh) == x509.load_pem_x509_certificate(new.cert_pem).serial_number != first
            for writer in (old, fresh):
                writer.write(encode_frame([Kind.HELLO, "x", "127.0.0.1:1", 0, []]))
                await writer.drain()
            await asyncio.wait_for(_until(lambda: len(frames) == 2), 5)  # both connections still deliver
            for writer in (old, fresh):
                writer.close()
        finally:
            listener.close()

    before = context.current()
    context.install(cfg)
    try:
        asyncio.run(main())
    finally:
        context._current = before


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dc2_cert", ["server2", "server"])
def test_requests_forwarded_to_another_datacenter_check_its_server_name(tmp_path, pki, dc2_cert):
    """?dc=dc2 from dc1 travels over TLS to dc2's server, which must present server.dc2.consul: a
    dc1 server certificate there is refused."""
    ca_cert, ca_key = certs.load_ca(pki["ca"].read_bytes(), pki["ca_key"].read_bytes())
    dc2 = certs.make_leaf("server", ca_cert, ca_key, dc="dc2")
    pki["server2"], pki["server2_key"] = tmp_path / "dc2.pem", tmp_path / "dc2-key.pem"
    pki["server2"].write_bytes(dc2.cert_pem)
    pki["server2_key"].write_bytes(dc2.key_pem)
    s1 = Agent(tmp_path, "s1", *server_args(1, rpc_hcl(pki, "server")))
    s2 = Agent(tmp_path, "s2", *server_args(1, rpc_hcl(pki, dc2_cert) + ' datacenter = "dc2" '
                                            f'retry_join_wan = ["{s1.wan_addr}"] retry_interval_wan = "1s"'))
    try:
        s1.start()
        s2.start()
        wait_until(lambda: s1.leader() and s2.leader(), timeout=60, what="two leaders")
        if dc2_cert == "server":
            wait_until(lambda: not s1.kv_put("tls/remote?dc=dc2", "across", timeout=5)
                       and "Hostname mismatch" in s1.log(), timeout=60,
                       what="dc1 refusing dc2's certificate")
            assert s2.kv_get("tls/remote") is None
            return
        wait_until(lambda: s1.kv_put("tls/remote?dc=dc2", "across", timeout=5), timeout=60,
                   what="a write to dc2 via dc1")
        assert s2.kv_get("tls/remote") == b"across"
        assert s1.kv_get("tls/remote") is None  # it went to dc2, not dc1
    finally:
        for s in (s1, s2):
            s.stop()
