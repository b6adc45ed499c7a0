"""tests/deploy: the Terraform modules, cloud auto-join against moto, the ECS wiring and the EC2
user data. test_ec2_user_data.py borrows the packaging tests' Debian root; register their marker
so that running tests/deploy alone does not warn about it."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds a Debian root or installs packages into it (about a minute)")
