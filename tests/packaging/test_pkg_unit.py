"""The systemd unit: what the packaging issue asks of it, and `systemd-analyze verify`.

`systemd-analyze verify` checks that every Exec*= program exists and is executable on this
machine; /usr/bin/cairn is not installed here, so the check runs on a copy whose /usr/bin/cairn
points at the packaged launcher extracted from the deb. Nothing else in the unit is changed.
"""

from __future__ import annotations

import configparser
from pathlib import Path

from tests.packaging.conftest import PROJECT_ROOT, Built, need, run

UNIT = PROJECT_ROOT / "packaging" / "common" / "systemd" / "cairn.service"


def unit_entries() -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def test_unit_settings_the_issue_asks_for() -> None:
    unit = unit_entries()
    service = unit["Service"]
    assert service["Type"] == ["notify"]  # the agent sends READY=1 once HTTP and DNS are bound
    assert service["User"] == ["cairn"] and service["Group"] == ["cairn"]
    assert service["ExecStartPre"] == ["/usr/bin/cairn validate -quiet /etc/cairn.d"]
    assert service["ExecStart"] == ["/usr/bin/cairn agent -config-dir=/etc/cairn.d $CAIRN_OPTS"]
    assert service["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == ["on-failure"]
    assert service["LimitNOFILE"] == ["65536"]
    assert service["EnvironmentFile"] == ["-/etc/default/cairn", "-/etc/sysconfig/cairn"]
    assert unit["Unit"]["ConditionDirectoryNotEmpty"] == ["/etc/cairn.d"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "full", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/cairn"}.items():  # fmt: skip
        assert service[key] == [value], key
    # A data dir that is missing is created with the right owner.
    assert service["StateDirectory"] == ["cairn"]
    # No capabilities unless port 53 is configured (a drop-in, described in the unit's comments).
    assert "AmbientCapabilities" not in service
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in UNIT.read_text()
    # A start that keeps failing (ports held by another agent) gives up instead of looping.
    assert int(unit["Unit"]["StartLimitBurst"][0]) >= 1
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


def test_systemd_analyze_verify(built: Built, tmp_path: Path) -> None:
    need("systemd-analyze", "systemd")
    need("dpkg-deb", "dpkg")
    root = tmp_path / "root"
    run("dpkg-deb", "-x", built.deb, root)
    launcher = root / "usr/bin/cairn"
    packaged_unit = root / "lib/systemd/system/cairn.service"
    assert packaged_unit.read_text() == UNIT.read_text()
    copy = tmp_path / "cairn.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/cairn", str(launcher)))
    proc = run("systemd-analyze", "verify", "--man=no", copy, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cairn.service" not in proc.stderr, proc.stderr  # no warnings about our unit either


def test_rpm_ships_the_same_unit(built: Built, tmp_path: Path) -> None:
    need("rpm", "rpm")
    run("rpm", "-i", "--root", tmp_path, "--nodeps", "--noscripts", "--dbpath", tmp_path / "rpmdb", built.rpm)
    assert (tmp_path / "usr/lib/systemd/system/cairn.service").read_text() == UNIT.read_text()
