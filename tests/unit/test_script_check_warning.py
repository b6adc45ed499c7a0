"""enable_script_checks while anonymous callers may register checks: the agent starts and warns,
as Consul does (docs/security.md, "Script checks"); ACLs on with default_policy deny, or local
script checks only, are quiet."""

from __future__ import annotations

import pytest

from appliance.config import build_agent_config
from appliance.config.acl import SCRIPT_CHECKS_WARNING

DENY = 'acl { enabled = true\n default_policy = "deny" }'


def warnings_of(*hcl: str) -> tuple[str, ...]:
    argv = ["-dev"]
    for text in hcl:
        argv += ["-hcl", text]
    return build_agent_config(argv, hostname="testhost").config_warnings


@pytest.mark.parametrize("hcl", [("enable_script_checks = true",),
                                 ("enable_script_checks = true", "acl { enabled = true }"),
                                 ("enable_script_checks = true", 'acl { enabled = true\n default_policy = "allow" }')])
def test_script_checks_open_to_anonymous_callers_are_warned_about(hcl):
    assert SCRIPT_CHECKS_WARNING in warnings_of(*hcl)


@pytest.mark.parametrize("hcl", [("enable_script_checks = true", DENY), ("enable_local_script_checks = true",), ()])
def test_no_warning_when_anonymous_callers_cannot_register_scripts(hcl):
    assert SCRIPT_CHECKS_WARNING not in warnings_of(*hcl)
