"""packaging/repo.sh: apt and yum repositories from built packages, unsigned and signed.

`apt-get install cairn` from the unsigned apt repository is exercised in a Debian root by
test_pkg_install.py; here the repository files themselves are checked, and the signatures are
verified with gpg against a throwaway key.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from tests.packaging.conftest import PROJECT_ROOT, VERSION, Built, need, run

REPO_SH = PROJECT_ROOT / "packaging" / "repo.sh"


def test_unsigned_repositories(built: Built, tmp_path: Path) -> None:
    need("apt-ftparchive", "apt-utils")
    need("createrepo_c", "createrepo-c")
    out = tmp_path / "repo"
    run(REPO_SH, built.dist, out)

    apt = out / "apt"
    packages = (apt / "dists/stable/main/binary-amd64/Packages").read_text()
    stanzas = {m["Package"]: m
               for m in (dict(re.findall(r"^([\w-]+): (.*)$", s, re.M)) for s in packages.split("\n\n") if s)}
    assert set(stanzas) == {"cairn", "cairn-dnsmasq"}
    assert stanzas["cairn"]["Version"] == VERSION
    assert stanzas["cairn"]["Filename"] == f"pool/main/{built.deb.name}"
    assert (apt / stanzas["cairn"]["Filename"]).is_file()
    assert gzip.decompress((apt / "dists/stable/main/binary-amd64/Packages.gz").read_bytes()).decode() == packages
    release = (apt / "dists/stable/Release").read_text()
    for line in ("Suite: stable", "Codename: stable", "Components: main", "Architectures: amd64"):
        assert line in release
    assert "main/binary-amd64/Packages" in release and "SHA256:" in release
    assert not (apt / "dists/stable/InRelease").exists()
    assert "[trusted=yes]" in (apt / "cairn.list").read_text()

    yum = out / "yum"
    repomd = (yum / "repodata/repomd.xml").read_text()
    assert 'type="primary"' in repomd
    primary = gzip.decompress((yum / "repodata/primary.xml.gz").read_bytes()).decode()
    assert "<name>cairn</name>" in primary and "<name>cairn-dnsmasq</name>" in primary
    assert f'ver="{VERSION}" rel="1"' in primary
    assert "gpgcheck=0" in (yum / "cairn.repo").read_text()


def test_signed_repositories(built: Built, tmp_path: Path) -> None:
    need("gpg", "gpg")
    need("apt-ftparchive", "apt-utils")
    need("createrepo_c", "createrepo-c")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", "cairn test <repo@example.org>",
            "ed25519", "sign", "1d", env=env)  # fmt: skip
        out = tmp_path / "repo"
        run(REPO_SH, "--key", "repo@example.org", built.dist, out, env=env)
        check_signatures(out, env)
    finally:
        run("gpgconf", "--kill", "gpg-agent", env=env, check=False)  # the agent gpg started for this home


def check_signatures(out: Path, env: dict[str, str]) -> None:

    suite = out / "apt/dists/stable"
    run("gpg", "--verify", suite / "Release.gpg", suite / "Release", env=env)
    run("gpg", "--verify", suite / "InRelease", env=env)
    run("gpg", "--verify", out / "yum/repodata/repomd.xml.asc", out / "yum/repodata/repomd.xml", env=env)
    assert (out / "cairn-archive-key.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "repo_gpgcheck=1" in (out / "yum/cairn.repo").read_text()
    assert "signed-by=" in (out / "apt/cairn.list").read_text()


def test_repo_sh_refuses_an_empty_directory(tmp_path: Path) -> None:
    proc = run(REPO_SH, tmp_path, tmp_path / "out", check=False)
    assert proc.returncode != 0 and "no .deb or .rpm" in proc.stderr


def test_dnsmasq_drop_in_passes_dnsmasq_test(built: Built, tmp_path: Path) -> None:
    """The file cairn-dnsmasq installs is one dnsmasq accepts."""
    dnsmasq = need("dnsmasq", "dnsmasq")
    run("dpkg-deb", "-x", built.deb_dnsmasq, tmp_path)
    proc = run(dnsmasq, "--test", f"--conf-file={tmp_path / 'etc/dnsmasq.d/10-cairn'}")
    assert "syntax check OK" in proc.stdout + proc.stderr
    assert "server=/consul/127.0.0.1#8600" in (tmp_path / "etc/dnsmasq.d/10-cairn").read_text()
