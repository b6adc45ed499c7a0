"""CSR signing (Consul's ConnectCA.Sign) in-process: the caller makes the key pair and a CSR, the
server signs it and never sees the private key; a service's CSR needs service:write, an agent's
node:write; a CSR of another datacenter or trust domain, or one that does not parse, is refused
with Consul's texts, nothing signed, and counted."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from http_inprocess import InProcessAgent, http_agent, inprocess, json_body

from appliance.connect import ca, csr, spiffe

SIGN = "/v1/internal/connect/ca/sign"
ACL_HCL = 'acl { enabled = true default_policy = "deny" }'


def _der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def _trust_domain(api: InProcessAgent) -> str:
    return str(json_body(await api.call("GET", "/v1/connect/ca/roots"))["TrustDomain"])


async def _counts(api: InProcessAgent, headers: dict[str, str] | None = None) -> dict[str, float]:
    metrics = json_body(await api.call("GET", "/v1/agent/metrics", headers=headers))
    return {c["Labels"]["result"]: c["Count"] for c in metrics["Counters"] if c["Name"] == "consul.connect.ca.sign"}


def _csr_with(key: Any, names: list[x509.GeneralName]) -> str:
    builder = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName(names), critical=False))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@inprocess
async def test_a_csr_is_signed_for_the_callers_key_and_verifies(tmp_path: Path) -> None:
    async with http_agent() as api:
        td = await _trust_domain(api)
        key = ca.generate_key()
        uri = spiffe.service_uri(td, "dc1", "web")
        answer = await api.call("PUT", SIGN, {"CSR": csr.make(uri, key)})
        assert answer.status == 200, answer.body
        issued = json_body(answer)
        assert set(issued) == {"SerialNumber", "CertPEM", "Service", "ServiceURI", "ValidAfter", "ValidBefore",
                               "CreateIndex", "ModifyIndex"}  # no private key: the caller has it
        assert issued["Service"] == "web" and issued["ServiceURI"] == uri
        cert = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
        assert _der(cert.public_key()) == _der(key.public_key())
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == [uri]
        roots = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        (tmp_path / "ca.pem").write_text(roots["Roots"][0]["RootCert"])
        (tmp_path / "leaf.pem").write_text(issued["CertPEM"])
        done = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(tmp_path / "ca.pem"),
                               str(tmp_path / "leaf.pem")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        # RSA keys are signed too (an agent makes what the CA's PrivateKeyType says)
        rsa_key = ca.generate_key("rsa", 2048)
        answer = await api.call("POST", SIGN, {"CSR": csr.make(uri, rsa_key)})
        assert answer.status == 200, answer.body
        cert = x509.load_pem_x509_certificate(json_body(answer)["CertPEM"].encode())
        assert _der(cert.public_key()) == _der(rsa_key.public_key())
        assert (await _counts(api)).get("signed") == 2


@inprocess
async def test_the_local_leaf_is_made_from_a_csr_with_a_key_of_the_roots_type() -> None:
    async with http_agent() as api:
        await api.call("PUT", "/v1/connect/ca/configuration",
                       {"Provider": "consul", "Config": {"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}})
        issued = json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/web"))
        key = serialization.load_pem_private_key(issued["PrivateKeyPEM"].encode(), None)
        cert = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
        assert issued["PrivateKeyPEM"].startswith("-----BEGIN RSA PRIVATE KEY-----")
        assert _der(cert.public_key()) == _der(key.public_key())
        assert (await _counts(api)).get("signed") == 1  # the same signing path as a CSR sent over HTTP


@inprocess
async def test_an_agent_csr_gets_the_clusters_trust_domain() -> None:
    async with http_agent(node="node-a") as api:
        td = await _trust_domain(api)
        key = ca.generate_key()
        answer = await api.call("PUT", SIGN, {"CSR": csr.make(spiffe.agent_uri("dummy.consul", "dc1", "node-a"), key)})
        assert answer.status == 200, answer.body
        issued = json_body(answer)
        assert issued["Agent"] == "node-a" and issued["AgentURI"] == f"spiffe://{td}/agent/client/dc/dc1/id/node-a"
        assert "Service" not in issued


def _bad_csrs(td: str) -> list[tuple[str, str]]:
    key = ca.generate_key()
    svc = spiffe.service_uri(td, "dc1", "web")
    root_pem = ca.make_root(key, "11111111-2222", 9, 0, 3600 * 24, "abcdefgh")
    good = csr.make(svc, key)
    der = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature's last integer: the CSR parses, its signature does not verify
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    return [
        ("", "no PEM-encoded data found"),
        ("hello", "no PEM-encoded data found"),
        (root_pem, "first PEM-block should be CERTIFICATE REQUEST type"),
        (_csr_with(key, [x509.UniformResourceIdentifier(svc), x509.UniformResourceIdentifier(svc + "2")]),
         "CSR SAN contains an invalid number of URIs: 2"),
        (_csr_with(key, [x509.DNSName("web.example")]), "CSR SAN contains an invalid number of URIs: 0"),
        (_csr_with(key, [x509.UniformResourceIdentifier(svc), x509.RFC822Name("a@b.example")]),
         "CSR SAN does not allow specifying email addresses"),
        (csr.make("https://example.com/x", key), "SPIFFE ID must have 'spiffe' scheme"),
        (csr.make(f"spiffe://{td}/what/is/this", key),
         f"SPIFFE ID is not in the expected format: spiffe://{td}/what/is/this"),
        (csr.make(f"spiffe://{td}", key), "SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID"),
        (csr.make(spiffe.service_uri(td, "dc2", "web"), key),
         "SPIFFE ID in CSR from a different datacenter: dc2, we are dc1"),
        (csr.make(spiffe.service_uri("other.consul", "dc1", "web"), key),
         f"SPIFFE ID in CSR from a different trust domain: other.consul, we are {td}"),
        (tampered, "x509: ECDSA verification failure"),
    ]


@inprocess
async def test_bad_csrs_are_refused_with_consul_texts_and_counted() -> None:
    async with http_agent() as api:
        td = await _trust_domain(api)
        cases = _bad_csrs(td)
        for pem, text in cases:
            answer = await api.call("PUT", SIGN, {"CSR": pem})
            assert (answer.status, answer.body.decode()) == (400, text), pem
        bad = await api.call("PUT", SIGN, {"CSR": 7})
        assert bad.status == 400 and bad.body.startswith(b"Request decode failed:")
        assert await _counts(api) == {"invalid": len(cases)}
        assert json_body(await api.call("GET", "/v1/connect/ca/roots"))["Roots"][0]["ModifyIndex"] > 0


@pytest.mark.parametrize("kind", ["service", "agent"])
@inprocess
async def test_the_csrs_identity_decides_the_permission(kind: str) -> None:
    async with http_agent("-hcl", ACL_HCL, node="node-a") as api:
        boot = json_body(await api.call("PUT", "/v1/acl/bootstrap"))
        root = {"X-Consul-Token": boot["SecretID"]}
        if kind == "service":
            rules = 'service "web" { policy = "write" } node "node-a" { policy = "read" }'
        else:
            rules = 'service "web" { policy = "read" } node "node-a" { policy = "write" }'
        policy = json_body(await api.call("PUT", "/v1/acl/policy", {"Name": "p", "Rules": rules}, headers=root))
        token = json_body(await api.call("PUT", "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]}, headers=root))
        mine = {"X-Consul-Token": token["SecretID"]}
        td = await _trust_domain(api)
        key = ca.generate_key()
        web, node = spiffe.service_uri(td, "dc1", "web"), spiffe.agent_uri(td, "dc1", "node-a")
        allowed, refused = (web, node) if kind == "service" else (node, web)
        answer = await api.call("PUT", SIGN, {"CSR": csr.make(allowed, key)}, headers=mine)
        assert answer.status == 200, answer.body
        answer = await api.call("PUT", SIGN, {"CSR": csr.make(refused, key)}, headers=mine)
        need = ("node:write' on \"node-a\"" if kind == "service" else "service:write' on \"web\"")
        assert answer.status == 403
        assert answer.body.decode() == (f"Permission denied: token with AccessorID '{token['AccessorID']}' "
                                        f"lacks permission '{need}")
        # another datacenter is refused only to a caller that may write the name (Consul's order)
        other = spiffe.service_uri(td, "dc2", "web")
        answer = await api.call("PUT", SIGN, {"CSR": csr.make(other, key)}, headers=mine)
        assert answer.status == (400 if kind == "service" else 403)
        anonymous = await api.call("PUT", SIGN, {"CSR": csr.make(allowed, key)})
        assert anonymous.status == 403 and b"anonymous token lacks permission" in anonymous.body
        counts = await _counts(api, root)
        assert counts["signed"] == 1 and counts["denied"] == (2 if kind == "service" else 3)
