"""The ec2-cluster module's user data, run for real in a Debian 12 root.

Terraform renders the user data (offline plan of the module, package repository
`file:///srv/cairn-repo`); `make deb` builds the package and packaging/repo.sh turns it into the
apt repository a user would serve; the script then runs with chroot in the Debian 12 root the
packaging tests use (debootstrap minbase + python3.11, cached in build/packaging-cache). The root's
own Debian sources are emptied first, so apt reads only the cairn repository and nothing leaves
the machine. What is checked: the script succeeds, cairn is installed from the repository, the
configuration it wrote is exactly the module's and `cairn validate` accepts it (provider=aws join
string included), and without systemd it does not try to start the service.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.terraform_helpers import MIRROR, OFFLINE_PROVIDER, copy_tree, tf
from tests.packaging.conftest import PROJECT_ROOT, need, run
from tests.packaging.test_pkg_install import Root

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed"),
]

ROOT_CONFIG = """
module "servers" {
  source           = "../modules/ec2-cluster"
  name             = "cairn-server"
  ami_id           = "ami-0123456789abcdef0"
  vpc_id           = "vpc-0123456789abcdef0"
  subnet_ids       = ["subnet-0123456789abcdef0"]
  package_repo_url = "file:///srv/cairn-repo"
}

output "user_data" {
  value = module.servers.user_data
}

output "retry_join" {
  value = module.servers.retry_join
}
"""


def render_user_data(tmp_path: Path) -> tuple[str, str]:
    assert MIRROR.is_dir(), f"the provider mirror {MIRROR} is missing"
    tree = copy_tree(tmp_path)
    root = tree / "userdata"
    root.mkdir()
    (root / "main.tf").write_text(ROOT_CONFIG)
    (root / "provider.tf").write_text(
        OFFLINE_PROVIDER.replace('provider "aws" {', 'provider "aws" {\n  region = "eu-west-1"')
    )
    tf(root, "init", "-backend=false", "-input=false")
    tf(root, "plan", "-refresh=false", "-input=false", "-lock=false", "-out=ud.tfplan")
    outputs = json.loads(tf(root, "show", "-json", "ud.tfplan").stdout)["planned_values"]["outputs"]
    return outputs["user_data"]["value"], outputs["retry_join"]["value"]


def test_user_data_installs_cairn_and_writes_a_valid_config(
    tmp_path: Path, deb_package: Path, debian_tarball: Path
) -> None:
    need("apt-ftparchive", "apt-utils")
    user_data, join = render_user_data(tmp_path)

    dist, repo = tmp_path / "dist", tmp_path / "repo"
    dist.mkdir()
    shutil.copy2(deb_package, dist)
    run(PROJECT_ROOT / "packaging" / "repo.sh", dist, repo, timeout=300)

    path = tmp_path / "root"
    path.mkdir()
    run("tar", "-C", path, "-xzf", debian_tarball, timeout=300)
    root = Root(path)
    (root / "etc/apt/sources.list").write_text("")  # only the cairn repository; no Debian mirror
    for f in (root / "etc/apt/sources.list.d").glob("*"):
        f.unlink()
    root.copy_in(repo, "srv/cairn-repo")
    (root / "var/lib/cloud/user-data.sh").parent.mkdir(parents=True, exist_ok=True)
    (root / "var/lib/cloud/user-data.sh").write_text(user_data)
    assert not (root / "run/systemd/system").exists()

    out = root.sh("sh /var/lib/cloud/user-data.sh", check=False, timeout=300)
    log = (
        (root / "var/log/cairn-user-data.log").read_text(errors="replace")
        if (root / "var/log/cairn-user-data.log").exists()
        else ""
    )
    assert out.returncode == 0, f"user data failed ({out.returncode}):\n{out.stdout}\n{log[-4000:]}"
    assert "cairn user data: done" in log
    assert "Configuration is valid!" in log

    assert (root / "usr/bin/cairn").exists()
    assert (
        root / "etc/apt/sources.list.d/cairn.list"
    ).read_text().strip() == "deb [trusted=yes] file:///srv/cairn-repo/apt stable main"
    config = json.loads((root / "etc/cairn.d/cluster-aws.json").read_text())
    assert config["retry_join"] == [join] == ["provider=aws tag_key=cairn-cluster tag_value=cairn-server"]
    assert config["server"] is True and config["bootstrap"] is False and config["bootstrap_expect"] == 3
    assert oct((root / "etc/cairn.d/cluster-aws.json").stat().st_mode & 0o777) == "0o640"

    again = root.sh("cairn validate /etc/cairn.d", check=False)
    assert again.returncode == 0 and "Configuration is valid!" in again.stdout, again.stdout
    # a broken join string in the same place is refused with its reason
    (root / "etc/cairn.d/60-typo.json").write_text(json.dumps({"retry_join": ["provider=aws tag_key=cairn-cluster"]}))
    bad = root.sh("cairn validate /etc/cairn.d", check=False)
    assert bad.returncode != 0 and "discover-aws: tag_value is required" in bad.stdout + bad.stderr, bad
    assert os.path.exists(root / "var/log/cairn-user-data.log")
