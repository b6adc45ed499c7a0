"""The built-in Connect CA over in-process HTTP: roots, configuration, leaves, rotation
(reference/connect.md §1). Leaves are checked with `openssl verify` against the published roots."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from http_inprocess import http_agent, inprocess, json_body

from appliance.connect import ca, leaf
from appliance.http.handlers.connect_ca import connect_agent
from appliance.state.snapshot import restore, snapshot


def _openssl_verify(tmp: Path, cafile: str, cert_chain: str, name: str = "leaf") -> subprocess.CompletedProcess[str]:
    """`openssl verify` of the first certificate of a chain, the rest given as untrusted."""
    (tmp / "ca.pem").write_text(cafile)
    pems = [p + "-----END CERTIFICATE-----\n" for p in cert_chain.split("-----END CERTIFICATE-----\n") if p.strip()]
    (tmp / f"{name}.pem").write_text(pems[0])
    args = ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp / "ca.pem")]
    if len(pems) > 1:
        (tmp / "untrusted.pem").write_text("".join(pems[1:]))
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    return subprocess.run([*args, str(tmp / f"{name}.pem")], capture_output=True, text=True, timeout=30)


@inprocess
async def test_roots_before_and_after_bootstrap_have_consul_shape():
    async with http_agent() as api:
        answer = await api.call("GET", "/v1/connect/ca/roots")
        assert answer.status == 200
        body = json_body(answer)
        assert set(body) == {"ActiveRootID", "TrustDomain", "Roots"}
        (root,) = body["Roots"]
        assert body["ActiveRootID"] == root["ID"] and root["Active"] is True
        cluster = root["ExternalTrustDomain"]
        assert body["TrustDomain"] == f"{cluster}.consul"
        assert list(root) == ["ID", "Name", "SerialNumber", "SigningKeyID", "ExternalTrustDomain", "NotBefore",
                              "NotAfter", "RootCert", "IntermediateCerts", "Active", "PrivateKeyType",
                              "PrivateKeyBits", "CreateIndex", "ModifyIndex"]
        assert root["Name"] == "Consul CA Primary Cert" and root["PrivateKeyType"] == "ec"
        assert root["PrivateKeyBits"] == 256 and root["IntermediateCerts"] is None
        assert len(root["ID"].split(":")) == 20 and len(root["SigningKeyID"].split(":")) == 32
        cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{cluster}.consul"]
        cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        assert cn.startswith("pri-") and cn.endswith(f".consul.ca.{cluster[:8]}.consul")
        assert answer.headers["X-Consul-Index"] == str(root["ModifyIndex"])
        pem = await api.call("GET", "/v1/connect/ca/roots?pem=true")
        assert pem.content_type == "application/pem-certificate-chain" and pem.body == root["RootCert"].encode()
        bad = await api.call("GET", "/v1/connect/ca/roots?pem=maybe")
        assert (bad.status, bad.body) == (400, b"The 'pem' query parameter must be a boolean value")
        agent = await api.call("GET", "/v1/agent/connect/ca/roots")
        assert json_body(agent) == body and agent.headers["X-Cache"] == "HIT"


@inprocess
async def test_leaf_has_the_spiffe_uri_and_verifies_against_the_roots(tmp_path):
    async with http_agent() as api:
        answer = await api.call("GET", "/v1/agent/connect/ca/leaf/web2")  # not registered: still issued
        assert answer.status == 200 and answer.headers["X-Cache"] == "MISS"
        issued = json_body(answer)
        roots = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        uri = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web2"
        assert issued["Service"] == "web2" and issued["ServiceURI"] == uri
        assert issued["PrivateKeyPEM"].startswith("-----BEGIN EC PRIVATE KEY-----")
        cert = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == [uri]
        assert ca.serial_hex(cert.serial_number) == issued["SerialNumber"]
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 72 * 3600
        assert answer.headers["X-Consul-Index"] == str(issued["ModifyIndex"])
        done = _openssl_verify(tmp_path, roots["Roots"][0]["RootCert"], issued["CertPEM"])
        assert done.returncode == 0, done.stdout + done.stderr
        again = await api.call("GET", "/v1/agent/connect/ca/leaf/web2")
        assert json_body(again) == issued and again.headers["X-Cache"] == "HIT"


@inprocess
async def test_blocking_leaf_waits_then_answers_a_renewed_leaf():
    async with http_agent() as api:
        first = json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/web"))
        idx = first["ModifyIndex"]
        timed_out = await api.call("GET", f"/v1/agent/connect/ca/leaf/web?index={idx}&wait=200ms")
        assert json_body(timed_out)["SerialNumber"] == first["SerialNumber"]
        agent = connect_agent(api.ctx)
        entry = agent.cache.get("web")
        assert entry is not None
        waiter = asyncio.create_task(api.call("GET", f"/v1/agent/connect/ca/leaf/web?index={idx}&wait=5s"))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        entry.renew_at = agent.clock()  # its soft expiry has come
        renewed = await asyncio.wait_for(waiter, 5)
        body = json_body(renewed)
        assert body["SerialNumber"] != first["SerialNumber"] and body["ModifyIndex"] > idx


def test_the_leaf_cache_keeps_the_most_recently_asked():
    cache = leaf.LeafCache(max_entries=2)
    issued = ca.Leaf("c", "k", 1, 0.0, 72 * 3600.0, "aa")
    for name in ("a", "b"):
        cache.put(name, "u", issued, None, 1, 0.0, 0.5)
    assert cache.get("a") is not None  # asked again: b is now the oldest
    cache.put("c", "u", issued, None, 2, 0.0, 0.5)
    assert list(cache.entries) == ["a", "c"]


def test_soft_expiry_is_between_60_and_90_percent_of_the_lifetime():
    # Consul's calculateSoftExpiry (reference/connect.md §1.8)
    assert leaf.soft_expiry(0, 1000, 0, 0.0) == 600
    assert leaf.soft_expiry(0, 1000, 0, 1.0) == 900
    assert leaf.soft_expiry(0, 1000, 700, 0.0) == 700
    assert leaf.soft_expiry(0, 1000, 950, 0.5) == 950
    assert leaf.soft_expiry(0, 500, 10, 0.5) == 10  # under ten minutes: now


@inprocess
async def test_configuration_get_and_ttl_change_keep_the_root():
    async with http_agent() as api:
        got = json_body(await api.call("GET", "/v1/connect/ca/configuration"))
        assert got["Provider"] == "consul" and got["Config"] == {"LeafCertTTL": "72h", "IntermediateCertTTL": "8760h",
                                                                 "RootCertTTL": "87600h"}
        assert got["State"] is None and got["ForceWithoutCrossSigning"] is False
        before = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        put = await api.call("PUT", "/v1/connect/ca/configuration",
                             {"Provider": "consul", "Config": {"leaf_cert_ttl": "24h"}})
        assert (put.status, put.body) == (200, b"")
        after = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        assert after["ActiveRootID"] == before["ActiveRootID"] and len(after["Roots"]) == 1
        cfg = json_body(await api.call("GET", "/v1/connect/ca/configuration"))
        assert cfg["Config"] == {"leaf_cert_ttl": "24h"} and cfg["ModifyIndex"] > got["ModifyIndex"]
        issued = json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/db"))
        cert = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 24 * 3600


@pytest.mark.parametrize("config,text", [
    ({"LeafCertTTL": "10m"}, "error configuring provider: leaf cert TTL must be greater or equal than 1h0m0s"),
    ({"LeafCertTTL": "9000h"}, "error configuring provider: leaf cert TTL must be less than 8760h0m0s"),
    ({"LeafCertTTL": "72h", "IntermediateCertTTL": "100h"},
     "error configuring provider: Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL (>=216h0m0s)."),
    ({"PrivateKeyType": "ec", "PrivateKeyBits": 128},
     "error configuring provider: EC key length must be one of (224, 256, 384, 521) bits"),
    ({"PrivateKeyType": "rsa", "PrivateKeyBits": 1024},
     "error configuring provider: RSA key length must be 2048 or 4096 bits"),
    ({"PrivateKeyType": "dsa"}, "error configuring provider: private key type must be either 'ec' or 'rsa'"),
    ({"RootCert": "x"}, "error configuring provider: must provide a private key when providing a root cert"),
])
@inprocess
async def test_bad_configuration_is_refused_and_nothing_changes(config: dict[str, Any], text: str):
    async with http_agent() as api:
        before = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        answer = await api.call("PUT", "/v1/connect/ca/configuration", {"Provider": "consul", "Config": config})
        assert (answer.status, answer.body.decode()) == (500, text)
        assert json_body(await api.call("GET", "/v1/connect/ca/roots")) == before


@inprocess
async def test_bad_requests_get_consul_texts():
    async with http_agent() as api:
        answer = await api.call("PUT", "/v1/connect/ca/configuration", b"{")
        assert answer.status == 400 and answer.body.startswith(b"Request decode failed: ")
        answer = await api.call("PUT", "/v1/connect/ca/configuration",
                                {"Provider": "consul", "Config": {}, "State": {"a": "b"}})
        assert (answer.status, answer.body) == (
            400, b"Provider State is read-only. It must be omitted or identical to the current value")
        answer = await api.call("PUT", "/v1/connect/ca/configuration", {"Provider": "vault", "Config": {}})
        assert answer.status == 500 and b"unknown CA provider" in answer.body
        key = ca.generate_key()
        other = ca.make_root(ca.generate_key(), "11111111-2222", 9, 0, 3600 * 24, "abcdefgh")
        answer = await api.call("PUT", "/v1/connect/ca/configuration",
                                {"Provider": "consul", "Config": {"PrivateKey": ca.key_pem(key), "RootCert": other}})
        assert answer.status == 500 and b"does not match" in answer.body
        answer = await api.call("PUT", "/v1/connect/ca/configuration",
                                {"Provider": "consul", "Config": {"PrivateKey": "garbage"}})
        assert answer.status == 500 and b"error parsing private key" in answer.body


@inprocess
async def test_rotation_cross_signs_so_old_trust_accepts_new_leaves(tmp_path):
    async with http_agent() as api:
        old = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        old_root = old["Roots"][0]
        first = await api.call("GET", "/v1/agent/connect/ca/leaf/web")
        idx = json_body(first)["ModifyIndex"]
        waiter = asyncio.create_task(api.call("GET", f"/v1/agent/connect/ca/leaf/web?index={idx}&wait=10s"))
        roots_waiter = asyncio.create_task(
            api.call("GET", f"/v1/connect/ca/roots?index={first.headers['X-Consul-Index']}&wait=10s"))
        await asyncio.sleep(0.05)
        connect_agent(api.ctx).rng.random = lambda: 0.0  # type: ignore[method-assign] # no jitter in the test
        put = await api.call("PUT", "/v1/connect/ca/configuration",
                             {"Provider": "consul", "Config": {"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}})
        assert put.status == 200, put.body
        new = json_body(await asyncio.wait_for(roots_waiter, 10))
        assert len(new["Roots"]) == 2 and new["ActiveRootID"] != old["ActiveRootID"]
        rotated, active = new["Roots"]
        assert rotated["ID"] == old_root["ID"] and rotated["Active"] is False
        assert active["Active"] is True and active["PrivateKeyType"] == "rsa" and active["PrivateKeyBits"] == 2048
        (cross,) = active["IntermediateCerts"]
        assert new["TrustDomain"] == old["TrustDomain"]
        renewed = json_body(await asyncio.wait_for(waiter, 10))
        assert renewed["SerialNumber"] != json_body(first)["SerialNumber"]
        assert renewed["PrivateKeyPEM"].startswith("-----BEGIN RSA PRIVATE KEY-----")  # the CA's key type
        assert renewed["CertPEM"].endswith(cross)  # the cross-signed root rides along
        # a peer that trusts only the old root accepts the new leaf through the cross-signed root
        assert _openssl_verify(tmp_path, old_root["RootCert"], renewed["CertPEM"]).returncode == 0
        # one that has the new root trusts it directly; the old leaf still verifies against the bundle
        bundle = (await api.call("GET", "/v1/connect/ca/roots?pem=true")).body.decode()
        assert _openssl_verify(tmp_path, active["RootCert"], renewed["CertPEM"].split(cross)[0]).returncode == 0
        assert _openssl_verify(tmp_path, bundle, json_body(first)["CertPEM"]).returncode == 0
        # without the old root, the cross-signed chain alone proves nothing
        assert _openssl_verify(tmp_path, active["RootCert"], json_body(first)["CertPEM"]).returncode != 0
        # the old root goes once every leaf it signed has expired (a leaf TTL after the rotation)
        agent = connect_agent(api.ctx)
        agent.clock = lambda: 4102444800.0  # far beyond the leaf TTL
        pruned = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        assert [r["ID"] for r in pruned["Roots"]] == [active["ID"]]


@inprocess
async def test_force_without_cross_signing_and_operator_supplied_root(tmp_path):
    async with http_agent() as api:
        key = ca.generate_key("ec", 384)
        roots = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        cluster = roots["Roots"][0]["ExternalTrustDomain"]
        root = ca.make_root(key, cluster, 99, 1_700_000_000, 87600 * 3600, "operator")
        put = await api.call("PUT", "/v1/connect/ca/configuration", {
            "Provider": "consul", "ForceWithoutCrossSigning": True,
            "Config": {"PrivateKey": ca.key_pem(key), "RootCert": root}})
        assert put.status == 200, put.body
        new = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        active = [r for r in new["Roots"] if r["Active"]][0]
        assert active["RootCert"] == root and active["IntermediateCerts"] is None
        assert active["PrivateKeyType"] == "ec" and active["PrivateKeyBits"] == 384
        issued = json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/web"))
        assert _openssl_verify(tmp_path, root, issued["CertPEM"]).returncode == 0


@inprocess
async def test_ca_state_survives_a_snapshot():
    async with http_agent() as api:
        roots = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        await api.call("GET", "/v1/agent/connect/ca/leaf/web")
        store = api.ctx.store
        copy = restore(snapshot(store))
        assert copy.connect.roots == store.connect.roots and copy.connect.keys == store.connect.keys
        assert copy.connect.serial == store.connect.serial >= 2
        assert copy.connect.ca_config == store.connect.ca_config
        assert roots["Roots"][0]["ID"] in copy.connect.keys


@inprocess
async def test_signing_is_rate_limited_by_csr_max_per_second():
    async with http_agent() as api:
        await api.call("PUT", "/v1/connect/ca/configuration", {"Provider": "consul", "Config": {"CSRMaxPerSecond": 2}})
        agent = connect_agent(api.ctx)
        agent.loop_time = lambda: 100.0  # the clock stands still: no token comes back
        statuses = [(await api.call("GET", f"/v1/agent/connect/ca/leaf/s{i}")).status for i in range(4)]
        assert statuses == [200, 200, 429, 429]
        refused = await api.call("GET", "/v1/agent/connect/ca/leaf/s9")
        assert refused.body == b"Rate limit reached, try again later"
        # a service that has a valid leaf keeps it while the limit holds, even when it is due for renewal
        entry = agent.cache.get("s0")
        assert entry is not None
        entry.renew_at = agent.clock()
        assert json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/s0"))["ModifyIndex"] == entry.index
        agent.loop_time = lambda: 101.0  # a second later: two more
        assert (await api.call("GET", "/v1/agent/connect/ca/leaf/s2")).status == 200
        assert json_body(await api.call("GET", "/v1/agent/connect/ca/leaf/s0"))["ModifyIndex"] > entry.index


@pytest.mark.parametrize("hcl,text", [
    ('connect { ca_provider = "vault" }', 'connect.ca_provider: "vault" is not available'),
    ('connect { ca_config { leaf_cert_ttl = "10m" } }',
     "connect.ca_config: leaf cert TTL must be greater or equal than 1h0m0s"),
    ('connect { ca_config { private_key_type = "rsa" private_key_bits = 1024 } }',
     "connect.ca_config: RSA key length must be 2048 or 4096 bits"),
])
def test_a_bad_ca_configuration_stops_the_agent_at_start(hcl: str, text: str):
    from appliance.config import build_agent_config
    from appliance.config.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(text)):
        build_agent_config(["-dev", "-hcl", hcl])
    assert build_agent_config(["-dev", "-hcl", 'connect { ca_config { leaf_cert_ttl = "24h" } }']
                              ).connect_ca_config == {"leaf_cert_ttl": "24h"}
