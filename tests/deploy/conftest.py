"""tests/deploy: the Terraform modules, cloud auto-join against moto, the ECS wiring, the EC2 user
data and the container image.

The last two share one `make deb` (the `deb_package` fixture) and the packaging tests' Debian 12
root tarball (debootstrap, cached in build/packaging-cache). Their marker is registered here so
that running tests/deploy alone does not warn about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.conftest import PROJECT_ROOT, need, need_root, run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds a Debian root or installs packages into it (about a minute)")


@pytest.fixture(scope="session")
def deb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make deb` from this checkout into a temporary dist/: the cairn deb."""
    need_root("chroot and dpkg into a Debian root")
    need("make", "make")
    base = tmp_path_factory.mktemp("deb")
    dist, build = base / "dist", base / "build"
    run("make", "-C", PROJECT_ROOT, "deb", f"DIST={dist}", f"BUILD={build}", timeout=600)
    (deb,) = dist.glob("cairn_*_amd64.deb")
    return deb


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """The packaging tests' Debian 12 root (minbase, python3.11, adduser) as a tarball."""
    need("chroot", "coreutils")
    from tests.packaging.test_pkg_install import debian_root_tarball

    return debian_root_tarball()
