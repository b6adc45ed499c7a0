"""`make packages` output: names, files, owners, modes, conffiles, dependencies, scripts.

What is checked comes from the packaging issue: a self-contained payload under /usr/lib/cairn
run by the distribution's python3.11, /usr/bin/cairn, the unit not marked as a config file,
/etc/cairn.d/cairn.hcl as a no-replace config file readable by group cairn only, the env file
outside the config directory (/etc/default/cairn, /etc/sysconfig/cairn), and the dnsmasq
drop-in in its own cairn-dnsmasq package.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.packaging.conftest import PROJECT_ROOT, VERSION, Built, need, run

PAYLOAD_LIB = "/usr/lib/cairn/lib"


# ---------------------------------------------------------------------------- version


def test_version_comes_from_one_place() -> None:
    """The Makefile and the packages take the version from appliance/__init__.py; pyproject agrees."""
    from appliance import __version__

    assert __version__ == VERSION
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
    assert run("make", "-s", "-C", PROJECT_ROOT, "version").stdout.strip() == __version__


def test_packages_are_built_with_the_promised_names(built: Built) -> None:
    for path in (built.deb, built.deb_dnsmasq, built.rpm, built.rpm_dnsmasq):
        assert path.is_file(), f"{path.name} not built; dist has {sorted(p.name for p in built.dist.iterdir())}"
    print(f"make packages: {built.seconds:.1f}s")


# ---------------------------------------------------------------------------- deb


def deb_listing(deb) -> dict[str, tuple[str, str]]:
    """path -> (mode string, owner/group) from `dpkg-deb -c`."""
    out = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0].removeprefix(".")
        out[path.rstrip("/") or "/"] = (parts[0], parts[1])
    return out


def deb_control(deb, field: str) -> str:
    return run("dpkg-deb", "-f", deb, field).stdout.strip()


def test_deb_control_fields(built: Built) -> None:
    need("dpkg-deb", "dpkg")
    assert deb_control(built.deb, "Package") == "cairn"
    assert deb_control(built.deb, "Version") == VERSION
    assert deb_control(built.deb, "Architecture") == "amd64"
    depends = [d.strip() for d in deb_control(built.deb, "Depends").split(",")]
    assert "python3.11" in depends  # /usr/bin/cairn runs /usr/bin/python3.11
    assert "adduser" in depends  # postinst creates the cairn system user
    assert any(re.fullmatch(r"libc6 \(>= 2\.\d+\)", d) for d in depends), depends  # compiled modules
    assert deb_control(built.deb, "Suggests") == "cairn-dnsmasq"

    assert deb_control(built.deb_dnsmasq, "Architecture") == "all"
    assert {d.strip() for d in deb_control(built.deb_dnsmasq, "Depends").split(",")} == {"cairn", "dnsmasq"}


def test_deb_files_owners_and_modes(built: Built) -> None:
    need("dpkg-deb", "dpkg")
    files = deb_listing(built.deb)
    expect = {
        "/usr/bin/cairn": "-rwxr-xr-x",
        "/lib/systemd/system/cairn.service": "-rw-r--r--",  # Debian 12 keeps units in /lib
        "/etc/cairn.d": "drwxr-x---",
        "/etc/cairn.d/cairn.hcl": "-rw-r-----",
        "/etc/default/cairn": "-rw-r--r--",
        "/usr/share/doc/cairn/copyright": "-rw-r--r--",
        "/usr/share/doc/cairn/changelog.gz": "-rw-r--r--",
        "/usr/share/doc/cairn/install.md": "-rw-r--r--",
        "/usr/share/cairn/systemd-resolved/cairn.conf": "-rw-r--r--",
        "/usr/share/cairn/dnsmasq/10-cairn": "-rw-r--r--",
        f"{PAYLOAD_LIB}/appliance/agent.py": "-rw-r--r--",
        f"{PAYLOAD_LIB}/sd/http.py": "-rw-r--r--",
        f"{PAYLOAD_LIB}/exporters/exposition.py": "-rw-r--r--",
        f"{PAYLOAD_LIB}/cairn-{VERSION}.dist-info/entry_points.txt": "-rw-r--r--",
    }
    for path, mode in expect.items():
        assert path in files, f"{path} missing from the deb"
        assert files[path][0] == mode, f"{path}: {files[path][0]} != {mode}"
    # Everything belongs to root; the cairn group is given in postinst through dpkg-statoverride.
    assert {owner for _, owner in files.values()} == {"root/root"}
    # Nothing group- or world-writable, no byte code shipped (postinst compiles it).
    assert not [p for p, (m, _) in files.items() if m[5] == "w" or m[8] == "w"]
    assert not [p for p in files if p.endswith(".pyc") or "__pycache__" in p]
    # The env file is outside the config dir, so the agent never tries to parse it.
    assert not [p for p in files if p.startswith("/etc/cairn.d/") and not p.endswith((".hcl", ".json"))]
    assert not [p for p in files if p.startswith("/usr/lib/systemd/")]


def test_deb_payload_has_every_runtime_dependency(built: Built) -> None:
    """Every distribution in uv.lock's runtime set is in /usr/lib/cairn/lib, at the locked version."""
    files = deb_listing(built.deb)
    dist_infos = {p.rsplit("/", 1)[1] for p in files if p.startswith(PAYLOAD_LIB + "/") and p.endswith(".dist-info")}
    exported = run("uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
                   "--format", "requirements-txt", cwd=PROJECT_ROOT).stdout  # fmt: skip
    for line in exported.splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        name, version = line.split(";")[0].strip().split("==")
        wanted = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"
        assert wanted in {d.lower() for d in dist_infos}, f"{name} {version} not in the payload"


def test_deb_conffiles_and_scripts(built: Built) -> None:
    need("dpkg-deb", "dpkg")
    info = run("dpkg-deb", "-I", built.deb, "conffiles").stdout.split()
    # The config and the env file are conffiles; the unit is not (upgrades must replace it).
    assert sorted(info) == ["/etc/cairn.d/cairn.hcl", "/etc/default/cairn"]
    scripts = run("dpkg-deb", "-I", built.deb).stdout
    for name in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\b{name}\s+#!/bin/sh", scripts), f"{name} missing"
    postinst = run("dpkg-deb", "-I", built.deb, "postinst").stdout
    assert "adduser --system" in postinst and "/var/lib/cairn" in postinst
    assert "deb-systemd-helper" in postinst and "daemon-reload" in postinst
    assert "[ -d /run/systemd/system ]" in postinst  # no systemd (a chroot): skip start, still succeed
    postrm = run("dpkg-deb", "-I", built.deb, "postrm").stdout
    assert re.search(r"purge\)[\s\S]*rm -rf /var/lib/cairn[\s\S]*deluser", postrm)
    assert run("dpkg-deb", "-I", built.deb_dnsmasq, "conffiles").stdout.split() == ["/etc/dnsmasq.d/10-cairn"]


def test_deb_maintainer_scripts_are_valid_shell() -> None:
    for script in ("postinst", "prerm", "postrm", "dnsmasq-postinst", "dnsmasq-postrm"):
        run("sh", "-n", PROJECT_ROOT / "packaging" / "deb" / script)
    for script in ("pre.sh", "post.sh", "preun.sh", "postun.sh", "dnsmasq-post.sh"):
        run("sh", "-n", PROJECT_ROOT / "packaging" / "rpm" / script)


def test_lintian_reports_no_errors(built: Built) -> None:
    need("lintian", "lintian")
    proc = run("lintian", "--no-tag-display-limit", built.deb, built.deb_dnsmasq, check=False, timeout=300)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- payload


def test_payload_targets(built: Built) -> None:
    """One payload per target: CPython 3.11 ABI, wheels no newer than the target's glibc."""
    for target, glibc in (("debian12", "2_36"), ("el9", "2_34")):
        info = json.loads((built.build / "payload" / f"{target}-amd64" / "usr/lib/cairn/BUILD-INFO.json").read_text())
        assert info["version"] == VERSION
        assert info["python"] == "3.11"
        assert info["wheel_platform"] == f"manylinux_{glibc}_x86_64"
        major, minor = (int(p) for p in info["min_glibc"].split("."))
        assert (major, minor) <= tuple(int(p) for p in glibc.split("_"))
        assert any(p.startswith("pydantic_core-") for p in info["packages"])


# ---------------------------------------------------------------------------- rpm

RPM_QF = "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\n]"


def rpm_files(rpm) -> dict[str, tuple[str, str, str]]:
    out = {}
    for line in run("rpm", "-qp", "--qf", RPM_QF, rpm).stdout.splitlines():
        path, flags, mode, owner = line.split("\t")
        out[path] = (flags, mode, owner)
    return out


def test_rpm_header(built: Built) -> None:
    need("rpm", "rpm")
    qf = "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}"
    assert run("rpm", "-qp", "--qf", qf, built.rpm).stdout == f"cairn|{VERSION}|1|x86_64|MPL-2.0"
    assert run("rpm", "-qp", "--qf", qf, built.rpm_dnsmasq).stdout == f"cairn-dnsmasq|{VERSION}|1|noarch|MPL-2.0"
    requires = {r.split()[0] for r in run("rpm", "-qpR", built.rpm).stdout.splitlines() if not r.startswith("rpmlib(")}
    assert requires == {"python3.11", "shadow-utils"}
    requires = {r.split()[0] for r in run("rpm", "-qpR", built.rpm_dnsmasq).stdout.splitlines()
                if not r.startswith("rpmlib(")}
    assert requires == {"cairn", "dnsmasq"}


def test_rpm_files_flags_owners_modes(built: Built) -> None:
    need("rpm", "rpm")
    files = rpm_files(built.rpm)
    expect = {
        "/usr/bin/cairn": ("", "-rwxr-xr-x", "root:root"),
        "/usr/lib/systemd/system/cairn.service": ("", "-rw-r--r--", "root:root"),  # not %config
        "/etc/cairn.d": ("", "drwxr-x---", "root:cairn"),
        "/etc/cairn.d/cairn.hcl": ("cn", "-rw-r-----", "root:cairn"),  # %config(noreplace)
        "/etc/sysconfig/cairn": ("cn", "-rw-r--r--", "root:root"),
        "/usr/lib/cairn": ("", "drwxr-xr-x", "root:root"),
        "/usr/lib/cairn/lib": ("", "drwxr-xr-x", "root:root"),
        f"{PAYLOAD_LIB}/appliance/agent.py": ("", "-rw-r--r--", "root:root"),
        "/usr/share/cairn/dnsmasq": ("", "drwxr-xr-x", "root:root"),
        "/usr/share/doc/cairn/copyright": ("", "-rw-r--r--", "root:root"),
    }
    for path, want in expect.items():
        assert files.get(path) == want, f"{path}: {files.get(path)} != {want}"
    assert not [p for p in files if p.endswith(".pyc") or p.startswith("/etc/default/") or p.startswith("/lib/")]
    # The package owns every directory it creates under its own trees, so `rpm -e` leaves none behind.
    dirs = {p for p, (_, mode, _) in files.items() if mode.startswith("d")}
    for path in files:
        if path.startswith(("/usr/lib/cairn/", "/usr/share/cairn/", "/etc/cairn.d/")):
            assert path.rsplit("/", 1)[0] in dirs, f"parent of {path} not owned"
    assert rpm_files(built.rpm_dnsmasq)["/etc/dnsmasq.d/10-cairn"] == ("cn", "-rw-r--r--", "root:root")


def test_rpm_scripts(built: Built) -> None:
    need("rpm", "rpm")
    scripts = run("rpm", "-qp", "--scripts", built.rpm).stdout
    sections = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n([\s\S]*?)(?=^\w+ scriptlet|\Z)", scripts, re.M))
    assert set(sections) == {"preinstall", "postinstall", "preuninstall", "postuninstall"}
    assert "useradd --system" in sections["preinstall"]
    assert "install -d -o cairn -g cairn -m 0750 /var/lib/cairn" in sections["postinstall"]
    assert "daemon-reload" in sections["postinstall"]
    assert '[ "$1" -eq 0 ]' in sections["preuninstall"] and "disable --now" in sections["preuninstall"]
    assert '[ "$1" -ge 1 ]' in sections["postuninstall"] and "try-restart cairn.service" in sections["postuninstall"]
    assert "userdel" not in scripts  # rpm has no purge: erasing keeps the user and data
    assert run("rpm", "-qp", "--changelog", built.rpm).stdout.strip()


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_config_file_in_the_package_validates(built: Built, fmt: str, tmp_path) -> None:
    """The shipped cairn.hcl passes `cairn validate` and names a working single server."""
    if fmt == "deb":
        need("dpkg-deb", "dpkg")
        run("dpkg-deb", "-x", built.deb, tmp_path)
    else:
        need("rpm", "rpm")
        run("rpm", "-i", "--root", tmp_path, "--nodeps", "--noscripts", "--dbpath", tmp_path / "rpmdb", built.rpm)
    hcl = tmp_path / "etc/cairn.d/cairn.hcl"
    out = run("uv", "run", "--frozen", "cairn", "validate", hcl.parent, cwd=PROJECT_ROOT)
    assert "Configuration is valid" in out.stdout
    text = hcl.read_text()
    for line in ('data_dir = "/var/lib/cairn"', "server    = true", "bootstrap = true"):
        assert line in text
    for example in ("#retry_join", "#encrypt", "#server     = false", "#bootstrap_expect = 3"):
        assert example in text
