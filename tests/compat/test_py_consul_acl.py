"""The unmodified PyPI client py-consul's ACL API against a real `cairn agent -dev` with
`default_policy = "deny"`: bootstrap (and the second one refused), tokens with caller-chosen IDs,
policies with JSON rules, roles, templated policies, permission denied, token/self, clone, delete,
and ACLs off (ACLDisabled)."""

from __future__ import annotations

import consul
import pytest
from conftest import AgentProcess

pytestmark = pytest.mark.timeout(60)
HCL = 'acl { enabled = true default_policy = "deny" }'


@pytest.fixture
def acl_agent(agent_factory) -> AgentProcess:  # type: ignore[no-untyped-def]
    return agent_factory("-hcl", HCL)


def test_py_consul_acl_flow(acl_agent: AgentProcess) -> None:
    anon = consul.Consul(host="127.0.0.1", port=acl_agent.http_port)
    boot = anon.acl.bootstrap()
    assert boot["Description"] == "Bootstrap Token (Global Management)"
    assert boot["Policies"][0]["Name"] == "global-management"
    with pytest.raises(consul.ACLPermissionDenied):
        anon.acl.bootstrap()
    root = consul.Consul(host="127.0.0.1", port=acl_agent.http_port, token=boot["SecretID"])

    policy = root.acl.policy.create(name="kv-read", rules={"key_prefix": {"app/": {"policy": "read"}}})
    assert policy["Name"] == "kv-read" and "app/" in policy["Rules"]
    assert any(p["Name"] == "kv-read" for p in root.acl.policy.list())
    assert root.acl.policy.read(policy["ID"])["ID"] == policy["ID"]

    accessor, secret = "00000000-dead-beef-0000-000000000000", "6A1253D2-1785-24FD-91C2-F8E78C745511"
    tok = root.acl.token.create(accessor_id=accessor, secret_id=secret, policies_id=[policy["ID"]],
                                description="app")
    assert (tok["AccessorID"], tok["SecretID"]) == (accessor, secret)
    assert root.acl.token.read(accessor)["Policies"][0]["Name"] == "kv-read"
    assert any(t["AccessorID"] == accessor for t in root.acl.token.list())

    app = consul.Consul(host="127.0.0.1", port=acl_agent.http_port, token=secret)
    assert app.acl.token.read_self()["AccessorID"] == accessor
    root.kv.put("app/x", "1")
    _, entry = app.kv.get("app/x")
    assert entry["Value"] == b"1"
    with pytest.raises(consul.ACLPermissionDenied):
        app.kv.put("app/x", "2")
    with pytest.raises(consul.ACLPermissionDenied):
        app.acl.token.list()
    with pytest.raises(consul.ACLPermissionDenied):
        anon.kv.get("app/x")

    role = root.acl.role.create(name="web-role", policies_name=["kv-read"], service_identities=[
        {"ServiceName": "web"}])
    assert root.acl.role.read_by_name("web-role")["ID"] == role["ID"]
    clone = root.acl.token.clone(accessor, description="copy")
    assert clone["Description"] == "copy" and clone["AccessorID"] != accessor
    assert root.acl.token.delete(clone["AccessorID"]) is True
    templates = root.acl.templated_policy.list()
    assert "builtin/service" in templates
    assert root.acl.token.delete(accessor) is True
    with pytest.raises(consul.ACLPermissionDenied):
        app.kv.get("app/x")  # ACL not found


def test_py_consul_acl_disabled(agent: AgentProcess) -> None:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    with pytest.raises(consul.ACLDisabled):
        c.acl.token.list()
