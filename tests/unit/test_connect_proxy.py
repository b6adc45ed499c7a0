"""The built-in proxy's parts: its configuration (flags and registrations, Consul's texts), TLS
contexts from a leaf and roots (real handshakes on loopback), splicing and metrics.
The whole proxy against a real agent runs in tests/e2e/test_connect_demo.py.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.connect.proxy import tls
from appliance.connect.proxy.config import (
    ProxyConfigError,
    Upstream,
    find_sidecar,
    from_registration,
    parse_upstream_flag,
    service_uri_matches,
    split_host_port,
)
from appliance.connect.proxy.metrics import Metrics
from appliance.connect.proxy.runner import splice

TD = "11111111-2222-3333-4444-555555555555.consul"


def test_upstream_flags():
    assert parse_upstream_flag("socat:9191") == Upstream("socat", "127.0.0.1", 9191)
    assert parse_upstream_flag("db:127.0.0.5:7000") == Upstream("db", "127.0.0.5", 7000)
    assert parse_upstream_flag("prepared_query:geo:7001") == Upstream("geo", "127.0.0.1", 7001, "prepared_query")
    for bad in ("socat", "socat:x", "socat:70000", ":9191", "a:b:c:d:e"):
        with pytest.raises(ProxyConfigError, match="Upstream value should be name:addr:port or name:port"):
            parse_upstream_flag(bad)
    assert split_host_port(":21000", "-listen") == ("", 21000)
    with pytest.raises(ProxyConfigError):
        split_host_port("nowhere", "-listen")


def _sidecar(sid: str, dest_id: str) -> dict:
    return {"Kind": "connect-proxy", "ID": sid, "Service": sid, "Port": 21000,
            "Proxy": {"DestinationServiceName": dest_id, "DestinationServiceID": dest_id}}


def test_find_sidecar_with_consuls_texts():
    services = {"web": {"ID": "web", "Service": "web"}, "web-sidecar-proxy": _sidecar("web-sidecar-proxy", "web")}
    assert find_sidecar(services, "WEB") == "web-sidecar-proxy"
    with pytest.raises(ProxyConfigError, match="^No sidecar proxy registered for db$"):
        find_sidecar(services, "db")
    services["other"] = _sidecar("other", "web")
    with pytest.raises(ProxyConfigError) as err:
        find_sidecar(services, "web")
    assert str(err.value) == ("More than one sidecar proxy registered for web.\n    Start proxy with -proxy-id and "
                              "one of the following IDs: other, web-sidecar-proxy")


def test_registration_to_config():
    svc = {"Kind": "connect-proxy", "ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Port": 21001,
           "Address": "", "Proxy": {
               "DestinationServiceName": "web", "DestinationServiceID": "web", "LocalServiceAddress": "127.0.0.1",
               "LocalServicePort": 8080, "Config": {"handshake_timeout_ms": 2500, "local_connect_timeout_ms": "300"},
               "Upstreams": [{"DestinationType": "service", "DestinationName": "socat", "LocalBindPort": 9191,
                              "Config": {"connect_timeout_ms": 700}},
                             {"DestinationName": "sock", "LocalBindSocketPath": "/tmp/x.sock"}]}}
    cfg = from_registration(svc)
    assert cfg.service == "web" and cfg.proxy_id == "web-sidecar-proxy"
    assert cfg.public == ("0.0.0.0", 21001) and cfg.local_app == ("127.0.0.1", 8080)
    assert cfg.upstreams == (Upstream("socat", "127.0.0.1", 9191, "service", "", 0.7),)
    assert (cfg.handshake_timeout_s, cfg.local_connect_timeout_s) == (2.5, 0.3)
    assert cfg.metrics_addr == ""
    with pytest.raises(ProxyConfigError, match="not a Connect proxy"):
        from_registration({"ID": "web", "Service": "web", "Port": 80})
    svc["Proxy"]["Config"] = {"envoy_prometheus_bind_addr": "127.0.0.1:9102"}
    assert from_registration(svc).metrics_addr == "127.0.0.1:9102"
    svc["Proxy"]["Config"] = {"envoy_prometheus_bind_addr": "9102"}
    with pytest.raises(ProxyConfigError, match="envoy_prometheus_bind_addr: invalid address '9102'"):
        from_registration(svc)


def test_spiffe_uri_matching():
    uri = f"spiffe://{TD}/ns/default/dc/dc1/svc/socat"
    assert service_uri_matches(uri, "socat") and service_uri_matches(uri.replace(TD, TD.upper()), "SOCAT", "DC1")
    assert service_uri_matches("spiffe://other.consul/ap/default/ns/default/dc/dc1/svc/socat", "socat")
    assert not service_uri_matches(uri, "web")
    assert not service_uri_matches(uri, "socat", "dc2")
    assert not service_uri_matches(f"spiffe://{TD}/agent/client/dc/dc1/id/n1", "socat")
    assert not service_uri_matches("https://example.invalid/svc/socat", "socat")


def test_metrics_render_in_prometheus_text():
    m = Metrics()
    m.add("inbound_conns", (("dst", "socat"),))
    m.add("inbound_rx_bytes", (("dst", "socat"),), 12)
    m.add("upstream_tx_bytes", (("dst", "socat"), ("dst_type", "service"), ("src", "web")), 5)
    text = m.render()
    assert "# TYPE consul_proxy_inbound_conns gauge\nconsul_proxy_inbound_conns{dst=\"socat\"} 1\n" in text
    assert 'consul_proxy_upstream_tx_bytes{dst="socat",dst_type="service",src="web"} 5' in text
    assert m.get("inbound_rx_bytes", dst="socat") == 12


# --------------------------------------------------------------------------------------------- TLS


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _ca(td: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    tag = format(x509.random_serial_number() % (1 << 32), "08x")  # each root its own name, as Consul's are
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pri-{tag}.consul.ca.{td[:8]}.consul")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], td: str, service: str, serial: int) -> dict:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    uri = f"spiffe://{td}/ns/default/dc/dc1/svc/{service}"
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(ca[0].subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca[1], hashes.SHA256()))
    return {"SerialNumber": f"{serial:02x}", "CertPEM": _pem(cert), "PrivateKeyPEM": _pem(key), "Service": service,
            "ServiceURI": uri}


def _roots(*cas: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> dict:
    return {"TrustDomain": TD, "Roots": [{"ID": f"root{i}", "RootCert": _pem(c[0]), "IntermediateCerts": None}
                                         for i, c in enumerate(cas)]}


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str, bytes]:
    """Serve one TLS connection that echoes a line; return (client URI seen by the server,
    server URI seen by the client, the echo)."""
    seen: dict[str, str] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["client"] = tls.peer_identity(writer.get_extra_info("ssl_object"))[0]
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        server_uri = tls.peer_identity(writer.get_extra_info("ssl_object"))[0]
        writer.write(b"ping\n")
        echo = await reader.readline()
        writer.close()
        return seen.get("client", ""), server_uri, echo
    finally:
        srv.close()


def test_mutual_tls_between_two_leaves_of_one_ca():
    ca = _ca(TD)
    web = tls.build(_leaf(ca, TD, "web", 2), _roots(ca))
    db = tls.build(_leaf(ca, TD, "db", 3), _roots(ca))
    client_uri, server_uri, echo = asyncio.run(_handshake(db.server, web.client))
    assert client_uri == f"spiffe://{TD}/ns/default/dc/dc1/svc/web"
    assert server_uri == f"spiffe://{TD}/ns/default/dc/dc1/svc/db"
    assert echo == b"ping\n"
    assert web.serial == "02" and web.roots == ("root0",)


def test_a_certificate_of_another_ca_is_refused_both_ways():
    ours, theirs = _ca(TD), _ca("99999999-2222-3333-4444-555555555555.consul")
    db = tls.build(_leaf(ours, TD, "db", 2), _roots(ours))
    intruder = tls.build(_leaf(theirs, TD, "web", 2), _roots(theirs, ours))  # trusts us, we do not trust it
    try:  # TLS 1.3: the client learns of the refusal when it reads
        client_uri, _, echo = asyncio.run(_handshake(db.server, intruder.client))
    except (ssl.SSLError, ConnectionError):
        client_uri, echo = "", b""
    assert (client_uri, echo) == ("", b"")
    # and a proxy does not accept a server whose chain it cannot verify
    with pytest.raises(ssl.SSLError):
        asyncio.run(_handshake(intruder.server, db.client))


def test_during_a_rotation_both_roots_are_trusted():
    old, new = _ca(TD), _ca(TD)
    server = tls.build(_leaf(new, TD, "db", 5), _roots(old, new))
    client = tls.build(_leaf(old, TD, "web", 4), _roots(old, new))
    assert asyncio.run(_handshake(server.server, client.client))[2] == b"ping\n"


def test_build_refuses_empty_roots():
    ca = _ca(TD)
    with pytest.raises(ValueError, match="no CA roots"):
        tls.build(_leaf(ca, TD, "web", 2), {"Roots": []})


# --------------------------------------------------------------------------------------------- splice


def test_splice_half_closes_tcp_and_counts_bytes():
    """A client that sends and then ends its side still gets the whole answer (TCP half-close)."""

    async def main() -> tuple[bytes, list[int], list[int]]:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the client's EOF comes through
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        up = await asyncio.start_server(backend, "127.0.0.1", 0)
        up_port = up.sockets[0].getsockname()[1]
        sent, received = [], []

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            remote = await asyncio.open_connection("127.0.0.1", up_port)
            await splice((reader, writer), remote, sent.append, received.append)

        front = await asyncio.start_server(relay, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
        writer.write(b"x" * 300_000)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        up.close()
        front.close()
        return answer, sent, received

    answer, sent, received = asyncio.run(main())
    assert answer == b"X" * 300_000
    assert sum(sent) == 300_000 and sum(received) == 300_000
