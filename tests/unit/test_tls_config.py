"""TLS: the certificates `cairn tls` builds, the `tls { }` block and its old keys, the SSL contexts."""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import ConfigError, build_agent_config
from appliance.tls import certs, context


def run_cli(cwd, *args):
    return subprocess.run([sys.executable, "-m", "appliance", "tls", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    assert run_cli(d, "ca", "create").returncode == 0
    assert run_cli(d, "cert", "create", "-server", "-node", "n1", "-additional-dnsname", "a.example",
                   "-additional-ipaddress", "10.0.0.9").returncode == 0
    assert run_cli(d, "cert", "create", "-client").returncode == 0
    assert run_cli(d, "cert", "create", "-cli").returncode == 0
    return d


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def test_ca_create_files_and_fields(pki):
    ca = load(pki / "consul-agent-ca.pem")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).critical
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"Consul Agent CA {ca.serial_number}"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == certs.CA_DAYS
    key = (pki / "consul-agent-ca-key.pem").read_bytes()
    assert key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert (pki / "consul-agent-ca-key.pem").stat().st_mode & 0o777 == 0o600


def test_ca_create_refuses_to_overwrite(pki):
    out = run_cli(pki, "ca", "create")
    assert out.returncode == 1 and out.stderr.strip() == "consul-agent-ca.pem already exists."


def test_server_certificate(pki):
    cert = load(pki / "dc1-server-consul-0.pem")
    dns, ips = sans(cert)
    assert dns == ["a.example", "n1.server.dc1.consul", "server.dc1.consul", "localhost"]
    assert ips == ["10.0.0.9", "127.0.0.1"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "server.dc1.consul"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == certs.LEAF_DAYS
    assert cert.public_key().curve.name == "secp256r1"
    text = subprocess.run(["openssl", "x509", "-in", str(pki / "dc1-server-consul-0.pem"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:server.dc1.consul, DNS:localhost, IP Address:10.0.0.9, IP Address:127.0.0.1" in text
    assert "prime256v1" in text
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(pki / "consul-agent-ca.pem"),
                             str(pki / "dc1-server-consul-0.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_client_and_cli_certificates(pki):
    assert sans(load(pki / "dc1-client-consul-0.pem")) == (["client.dc1.consul", "localhost"], ["127.0.0.1"])
    cli = load(pki / "dc1-cli-consul-0.pem")
    assert sans(cli) == (["cli.dc1.consul", "localhost"], [])
    with pytest.raises(x509.ExtensionNotFound):
        cli.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_cert_numbering_and_output(pki):
    out = run_cli(pki, "cert", "create", "-client")
    assert out.stdout.splitlines() == ["==> Using consul-agent-ca.pem and consul-agent-ca-key.pem",
                                       "==> Saved dc1-client-consul-1.pem", "==> Saved dc1-client-consul-1-key.pem"]
    out = run_cli(pki, "cert", "create", "-server", "-dc", "east")
    assert out.stdout.startswith("==> WARNING: Server Certificates grants authority to become a\n")
    assert "==> Saved east-server-consul-0.pem" in out.stdout


@pytest.mark.parametrize("args,text", [
    ((), "Please provide either -server, -client, or -cli"),
    (("-server", "-client"), "Please provide either -server, -client, or -cli"),
    (("-client", "-node", "x"), "-node requires -server"),
])
def test_cert_create_usage_errors(pki, args, text):
    out = run_cli(pki, "cert", "create", *args)
    assert out.returncode == 1 and out.stderr.strip() == text


def test_cert_create_without_ca(tmp_path):
    out = run_cli(tmp_path, "cert", "create", "-server")
    assert out.returncode == 1 and out.stderr.startswith("Error reading CA: open consul-agent-ca.pem:")


def test_name_constraint(tmp_path):
    issued = certs.make_ca(name_constraint=True, additional_constraints=["example.org"])
    ca = x509.load_pem_x509_certificate(issued.cert_pem)
    ext = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert [n.value for n in ext.value.permitted_subtrees] == ["example.org", "consul", "localhost"]


def test_ca_common_name_and_cluster_id(tmp_path):
    assert run_cli(tmp_path, "ca", "create", "-common-name", "Our CA", "-cluster-id", "abc").returncode == 0
    ca = load(tmp_path / "consul-agent-ca.pem")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Our CA"
    uris = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://abc.consul"]


# ------------------------------------------------------------------ configuration


def build(tmp_path, cfg):
    path = tmp_path / "tls.json"
    path.write_text(json.dumps(cfg))
    return build_agent_config(["-dev", "-config-file", str(path)], hostname="testhost")


def test_tls_block_inherits_defaults(tmp_path):
    cfg = build(tmp_path, {"tls": {"defaults": {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem",
                                                "verify_incoming": True, "tls_min_version": "tls13"},
                                   "internal_rpc": {"verify_server_hostname": True},
                                   "https": {"verify_incoming": False}}})
    rpc, https = cfg.tls.internal_rpc, cfg.tls.https
    assert rpc.verify_incoming and rpc.verify_server_hostname and rpc.verify_outgoing  # hostname implies outgoing
    assert not https.verify_incoming and https.cert_file == "c.pem" and https.tls_min_version == "TLSv1_3"


def test_deprecated_top_level_keys(tmp_path):
    cfg = build(tmp_path, {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem",
                           "verify_incoming_rpc": True, "verify_incoming_https": False, "verify_outgoing": True,
                           "verify_server_hostname": True, "tls_min_version": "tls12",
                           "tls_prefer_server_cipher_suites": True})
    assert cfg.tls.internal_rpc.verify_incoming and not cfg.tls.https.verify_incoming
    assert cfg.tls.internal_rpc.verify_server_hostname and cfg.tls.https.verify_outgoing
    assert cfg.tls.grpc.ca_file == "ca.pem"
    assert "The 'verify_incoming_rpc' field is deprecated. Use the 'tls.internal_rpc.verify_incoming' field " \
           "instead." in cfg.config_warnings


def test_tls_block_wins_over_old_key(tmp_path):
    cfg = build(tmp_path, {"verify_incoming": True, "ca_file": "a.pem", "cert_file": "c", "key_file": "k",
                           "tls": {"defaults": {"verify_incoming": False}}})
    assert not cfg.tls.internal_rpc.verify_incoming


@pytest.mark.parametrize("cfg,text", [
    ({"tls": {"defaults": {"tls_min_version": "TLSv9"}}}, 'tls.internal_rpc.tls_min_version: unsupported TLS version'),
    ({"tls": {"defaults": {"tls_cipher_suites": "TLS_NOPE"}}}, 'unsupported cipher suite "TLS_NOPE"'),
    ({"tls": {"defaults": {"cert_file": "c.pem"}}}, "tls.internal_rpc: key_file must be set together with cert_file"),
    ({"tls": {"https": {"verify_incoming": True, "cert_file": "c", "key_file": "k"}}},
     "tls.https: verify_incoming set but no CA certificates were provided"),
    ({"verify_outgoing": True}, "tls.internal_rpc: verify_outgoing set but no CA certificates were provided"),
])
def test_tls_validation(tmp_path, cfg, text):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, cfg)
    assert text in str(err.value)


def test_https_port_without_certificate_is_a_warning(tmp_path):
    cfg = build(tmp_path, {"ports": {"https": 8501}})
    assert any("ports.https is 8501 but tls.https has no cert_file" in w for w in cfg.config_warnings)


def test_contexts_from_files(tmp_path, pki):
    cfg = build(tmp_path, {"ports": {"https": 0}, "tls": {
        "defaults": {"ca_file": str(pki / "consul-agent-ca.pem"), "cert_file": str(pki / "dc1-server-consul-0.pem"),
                     "key_file": str(pki / "dc1-server-consul-0-key.pem"), "verify_incoming": True,
                     "tls_cipher_suites": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
        "internal_rpc": {"verify_server_hostname": True}}})
    ctxs = context.Contexts.build(cfg)
    assert ctxs.https is not None and ctxs.https.verify_mode == ssl.CERT_REQUIRED
    assert ctxs.rpc_client is not None and ctxs.rpc_client.check_hostname
    assert ctxs.server_name() == "server.dc1.consul" and ctxs.server_name("east") == "server.east.consul"
    assert ctxs.rpc_require_tls and ctxs.rpc_check_servers


def test_contexts_missing_file(tmp_path):
    cfg = build(tmp_path, {"tls": {"defaults": {"cert_file": str(tmp_path / "no.pem"), "key_file": "k.pem"}}})
    with pytest.raises(context.TLSError, match="Failed to load cert/key pair"):
        context.Contexts.build(cfg)


def test_leaf_names_order():
    assert certs.leaf_names("server", dc="d", domain="x", node="n", additional_dns=[" a "],
                            additional_ips=["::1"]) == ("server.d.x", ["a", "n.server.d.x", "server.d.x", "localhost"],
                                                        [str(ipaddress.ip_address("::1")), "127.0.0.1"])
