"""/v1/acl/* in-process: bootstrap and its reset file, tokens, policies, roles, templated
policies, the agent's tokens, auth methods, binding rules, jwt login and logout, and ACLs off."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.unit.http_inprocess import InProcessAgent, http_agent, json_body

HCL = 'acl { enabled = true default_policy = "deny" }'


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def boot(api: InProcessAgent) -> dict[str, str]:
    a = await api.call("PUT", "/v1/acl/bootstrap")
    assert a.status == 200, a.body
    body = json_body(a)
    assert body["ID"] == body["SecretID"] and body["Description"] == "Bootstrap Token (Global Management)"
    return {"X-Consul-Token": body["SecretID"]}


def test_acls_off_is_401() -> None:
    async def go() -> None:
        async with http_agent() as api:
            for method, path in (("PUT", "/v1/acl/bootstrap"), ("GET", "/v1/acl/tokens"),
                                 ("GET", "/v1/acl/token/self"), ("POST", "/v1/acl/login")):
                a = await api.call(method, path)
                assert (a.status, a.body) == (401, b"ACL support disabled")
    run(go())


def test_bootstrap_once_and_the_reset_file(tmp_path: Path) -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL, "-data-dir", str(tmp_path)) as api:
            await boot(api)
            a = await api.call("PUT", "/v1/acl/bootstrap")
            assert a.status == 403
            text = a.body.decode()
            assert text.startswith("Permission denied: ACL bootstrap no longer allowed (reset index: ")
            index = int(text.rsplit(" ", 1)[1].rstrip(")"))
            (tmp_path / "acl-bootstrap-reset").write_text(f"{index + 1}\n")
            a = await api.call("PUT", "/v1/acl/bootstrap")
            assert a.status == 500 and a.body.decode() == (
                f"Invalid bootstrap reset index (specified {index + 1}, reset index: {index})")
            (tmp_path / "acl-bootstrap-reset").write_text(f"{index}\n")
            await boot(api)
            assert not (tmp_path / "acl-bootstrap-reset").exists()
    run(go())


def test_tokens_policies_roles() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            root = await boot(api)
            a = await api.call("PUT", "/v1/acl/policy", {"Name": "kv", "Rules": 'key_prefix "" { policy = "write" }'},
                               headers=root)
            pid = json_body(a)["ID"]
            a = await api.call("PUT", "/v1/acl/policy", {"Name": "kv"}, headers=root)
            assert (a.status, a.body) == (500, b'Invalid Policy: A Policy with Name "kv" already exists')
            a = await api.call("PUT", "/v1/acl/policy", {"Name": "x y"}, headers=root)
            assert a.body == b"Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
            a = await api.call("PUT", "/v1/acl/policy", {"ID": pid, "Name": "z"}, headers=root)
            assert (a.status, a.body) == (400, b"Cannot specify the ID when creating a new policy")
            acc, sec = "00000000-dead-beef-0000-000000000000", "6a1253d2-1785-24fd-91c2-f8e78c745511"
            body = {"AccessorID": acc, "SecretID": sec, "Policies": [{"Name": "kv"}]}
            a = await api.call("PUT", "/v1/acl/token", body, headers=root)
            tok = json_body(a)
            assert (tok["AccessorID"], tok["SecretID"], tok["Description"]) == (acc, sec, "")
            assert tok["Policies"] == [{"ID": pid, "Name": "kv"}]
            a = await api.call("PUT", "/v1/acl/token", {"AccessorID": "00000000-0000-0000-0000-000000000099"},
                               headers=root)
            assert a.body.startswith(b'Invalid Token: AccessorID - UUIDs with the prefix')
            assert (await api.call("PUT", "/v1/kv/a", b"1", headers={"X-Consul-Token": sec})).status == 200
            a = await api.call("PUT", f"/v1/acl/token/{acc}", {"Description": "renamed", "Policies": [{"ID": pid}]},
                               headers=root)
            assert json_body(a)["SecretID"] == sec and json_body(a)["Description"] == "renamed"
            a = await api.call("PUT", f"/v1/acl/token/{acc}/clone", {}, headers=root)
            assert json_body(a)["Description"] == "renamed" and json_body(a)["AccessorID"] != acc
            a = await api.call("GET", f"/v1/acl/tokens?policy={pid}", headers=root)
            assert len(json_body(a)) == 2
            a = await api.call("PUT", "/v1/acl/role", {"Name": "r", "Policies": [{"ID": pid}],
                                                       "ServiceIdentities": [{"ServiceName": "web"}]}, headers=root)
            rid = json_body(a)["ID"]
            a = await api.call("GET", "/v1/acl/role/name/r", headers=root)
            assert json_body(a)["ID"] == rid
            a = await api.call("GET", "/v1/acl/policy/00000000-0000-0000-0000-000000000009", headers=root)
            assert (a.status, a.body) == (404, b"Requested policy does not exist: ACL not found")
            a = await api.call("DELETE", "/v1/acl/token/00000000-0000-0000-0000-000000000002", headers=root)
            assert a.body == b"Delete operation not permitted on the anonymous token"
            a = await api.call("DELETE", f"/v1/acl/token/{acc}", headers=root)
            assert json_body(a) is True
            assert (await api.call("GET", "/v1/kv/a", headers={"X-Consul-Token": sec})).body == b"ACL not found"
            a = await api.call("GET", "/v1/acl/tokens", headers={"X-Consul-Token": "anonymous"})
            assert a.status == 403
    run(go())


def test_agent_token_and_the_default(tmp_path: Path) -> None:
    hcl = 'acl { enabled = true default_policy = "deny" enable_token_persistence = true }'

    async def go() -> None:
        async with http_agent("-hcl", hcl, "-data-dir", str(tmp_path)) as api:
            root = await boot(api)
            a = await api.call("PUT", "/v1/agent/token/default", {"Token": root["X-Consul-Token"]}, headers=root)
            assert a.status == 200
            assert (await api.call("PUT", "/v1/kv/a", b"1")).status == 200
            assert json.loads((tmp_path / "acl-tokens.json").read_text())["default"] == root["X-Consul-Token"]
    run(go())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_login_and_logout() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def token(claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
        return head + "." + _b64(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))

    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            root = await boot(api)
            a = await api.call("PUT", "/v1/acl/auth-method", {
                "Name": "jwt1", "Type": "jwt", "Config": {
                    "JWTValidationPubKeys": [pem], "BoundIssuer": "me", "ClaimMappings": {"svc": "service"}}},
                headers=root)
            assert a.status == 200, a.body
            a = await api.call("PUT", "/v1/acl/binding-rule", {"AuthMethod": "jwt1", "BindType": "service",
                                                               "BindName": "${value.service}",
                                                               "Selector": 'value.service == "web"'}, headers=root)
            assert a.status == 200, a.body
            now = int(time.time())
            good = token({"iss": "me", "svc": "web", "exp": now + 60})
            a = await api.call("POST", "/v1/acl/login", {"AuthMethod": "jwt1", "BearerToken": good})
            assert a.status == 200, a.body
            tok = json_body(a)
            assert tok["ServiceIdentities"] == [{"ServiceName": "web"}] and tok["AuthMethod"] == "jwt1"
            other = token({"iss": "me", "svc": "db", "exp": now + 60})
            a = await api.call("POST", "/v1/acl/login", {"AuthMethod": "jwt1", "BearerToken": other})
            assert (a.status, a.body) == (403, b"Permission denied")
            a = await api.call("POST", "/v1/acl/login", {"AuthMethod": "jwt1", "BearerToken": good[:-4] + "AAAA"})
            assert a.status == 403
            a = await api.call("POST", "/v1/acl/login", {"AuthMethod": "nope", "BearerToken": good})
            assert a.status == 403
            a = await api.call("POST", "/v1/acl/logout", headers=root)
            assert a.body == b"Permission denied: token wasn't created via login"
            a = await api.call("POST", "/v1/acl/logout", headers={"X-Consul-Token": tok["SecretID"]})
            assert json_body(a) is True
    run(go())


def test_hostile_bodies_get_consuls_statuses_never_a_crash(caplog: Any) -> None:
    """Bodies of every JSON shape to every ACL write: an answer with Consul's status, never an
    unexpected exception (the dispatcher logs those as `request failed`)."""
    import random

    values: list[Any] = [None, True, 0, -1, 1.5, "", "x", "00000000-0000-0000-0000-000000000002", [], [1], ["a"],
                         [{}], [{"ID": 5}], [{"Name": None}], {}, {"a": 1}, "1h", "-5s", 10**30]
    fields = ["AccessorID", "SecretID", "Description", "Policies", "Roles", "ServiceIdentities", "NodeIdentities",
              "TemplatedPolicies", "Local", "ExpirationTTL", "ExpirationTime", "Name", "Rules", "Datacenters",
              "Type", "Config", "MaxTokenTTL", "TokenLocality", "AuthMethod", "BindType", "BindName", "Selector",
              "BindVars", "BearerToken", "Meta", "Token", "BootstrapSecret", "ID"]
    targets = [("PUT", "/v1/acl/token"), ("PUT", "/v1/acl/policy"), ("PUT", "/v1/acl/role"),
               ("PUT", "/v1/acl/auth-method"), ("PUT", "/v1/acl/binding-rule"), ("POST", "/v1/acl/login"),
               ("PUT", "/v1/agent/token/default"), ("POST", "/v1/acl/templated-policy/preview/builtin/service")]
    rng = random.Random(5)

    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            root = await boot(api)
            await api.call("PUT", "/v1/acl/auth-method", {"Name": "m", "Type": "kubernetes", "Config": {}},
                           headers=root)
            for _ in range(400):
                method, path = rng.choice(targets)
                body: Any = {rng.choice(fields): rng.choice(values) for _ in range(rng.randint(0, 4))}
                if rng.random() < 0.1:
                    body = rng.choice(values)
                a = await api.call(method, path, json.dumps(body), headers=root)
                assert a.status in (200, 400, 403, 404, 500), (path, body, a.status)
            for raw in (b"{", b"[", b"\xff", b'{"Policies": [' * 50):
                a = await api.call("PUT", "/v1/acl/token", raw, headers=root)
                assert a.status == 400, (raw, a.body)
    run(go())
    assert not [r for r in caplog.records if "request failed" in r.getMessage()], \
        [r.getMessage() for r in caplog.records if "request failed" in r.getMessage()][:3]
