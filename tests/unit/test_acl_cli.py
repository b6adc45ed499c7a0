"""`cairn acl` output: Consul's pretty token and policy formats, Go's time text, argument errors."""

from __future__ import annotations

import pytest

from appliance.cli import acl_format as fmt
from appliance.cli.acl import run


def test_go_time() -> None:
    assert fmt.go_time("2018-12-06T18:03:23.742699239Z") == "2018-12-06 18:03:23.742699239 +0000 UTC"
    assert fmt.go_time("2024-05-01T11:00:00Z") == "2024-05-01 11:00:00 +0000 UTC"


def test_pretty_token() -> None:
    tok = {"AccessorID": "a", "SecretID": "s", "Description": "Bootstrap Token (Global Management)", "Local": False,
           "CreateTime": "2018-12-06T18:03:23.742699239Z",
           "Policies": [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}],
           "ServiceIdentities": [{"ServiceName": "web"}, {"ServiceName": "db", "Datacenters": ["dc1", "dc2"]}],
           "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}]}
    assert fmt.token(tok) == (
        "AccessorID:       a\n"
        "SecretID:         s\n"
        "Description:      Bootstrap Token (Global Management)\n"
        "Local:            false\n"
        "Create Time:      2018-12-06 18:03:23.742699239 +0000 UTC\n"
        "Policies:\n"
        "   00000000-0000-0000-0000-000000000001 - global-management\n"
        "Service Identities:\n"
        "   web (Datacenters: all)\n"
        "   db (Datacenters: dc1, dc2)\n"
        "Node Identities:\n"
        "   n1 (Datacenter: dc1)")


@pytest.mark.parametrize(("argv", "text"), [
    (["set-agent-token"], "Missing TYPE and TOKEN arguments"),
    (["set-agent-token", "agent"], "Missing TOKEN argument"),
    (["set-agent-token", "a", "b", "c"], "Too many arguments: expected 2 got 3"),
    (["set-agent-token", "nope", "x"], "Unknown token type"),
    (["token", "create"], "Cannot create a token without specifying -policy-name"),
])
def test_argument_errors(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv) == 1
    assert text in capsys.readouterr().err
