"""Build the file tree one package carries, for one target distribution.

    python packaging/build_payload.py --target debian12 --arch amd64 --out build/payload/debian12-amd64

The tree holds `usr/lib/cairn/lib/`: cairn (with its .dist-info, so the `cairn.extensions`
entry points resolve) and every runtime dependency pinned in uv.lock, installed from wheels
built for the target's Python ABI (CPython 3.11) and C library (the target's glibc, as a
manylinux platform tag). Nothing is compiled here and nothing of this machine's Python is
copied: the package runs the distribution's own /usr/bin/python3.11.

The version comes from `appliance/__init__.py` (`--print-version` prints it for the Makefile).
"""

from __future__ import annotations

import argparse
import email
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"

# target -> what the package is built for: the distribution's Python and glibc.
TARGETS = {
    # Debian 12 (bookworm): python3.11 3.11.2, glibc 2.36.
    "debian12": {"glibc": "2_36", "python": PYTHON_VERSION, "describe": "Debian 12 (bookworm)"},
    # RHEL 9 (python3.11 from AppStream, 9.2 and later) and Amazon Linux 2023 (python3.11): glibc 2.34.
    "el9": {"glibc": "2_34", "python": PYTHON_VERSION, "describe": "RHEL 9 and compatible, Amazon Linux 2023"},
}

# package architecture name -> machine name in manylinux tags
MACHINES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


def project_version() -> str:
    text = (ROOT / "appliance" / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("appliance/__init__.py has no __version__")
    return match.group(1)


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def max_glibc(path: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y symbol version a shared object needs (readelf -V)."""
    out = subprocess.run(["readelf", "-V", "-W", str(path)], check=True, capture_output=True, text=True).stdout
    found = [tuple(int(p) for p in m.groups()) for m in re.finditer(r"GLIBC_(\d+)\.(\d+)", out)]
    return max(found, default=(0, 0))


def write_copyright(lib: Path, dest: Path) -> None:
    """packaging/common/copyright plus a comment naming each bundled library, its version and license."""
    lines = []
    for info in sorted(lib.glob("*.dist-info")):
        meta = email.message_from_string((info / "METADATA").read_text(encoding="utf-8"))
        if meta["Name"] == "cairn":
            continue
        license_ = meta.get("License-Expression") or (meta.get("License") or "").split("\n")[0].strip()
        if not license_:
            license_ = ", ".join(c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                                 if c.startswith("License"))
        lines.append(f" {meta['Name']} {meta['Version']}: {license_ or 'see its dist-info directory'}")
    text = (ROOT / "packaging" / "common" / "copyright").read_text()
    comment = (
        "Comment:\n"
        " The cairn package also carries, unmodified under /usr/lib/cairn/lib, the\n"
        " Python libraries cairn runs on, each under its own license; each library's\n"
        " license text is in its *.dist-info directory there:\n .\n" + "\n".join(lines) + "\n"
    )
    head, sep, rest = text.partition("Upstream-Name: cairn\n")
    text = head + sep + comment + rest
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


def build(target: str, arch: str, out: Path, work: Path) -> dict[str, object]:
    spec = TARGETS[target]
    machine = MACHINES[arch]
    platform = f"{machine}-manylinux_{spec['glibc']}"
    lib = out / "usr" / "lib" / "cairn" / "lib"
    if out.exists():
        shutil.rmtree(out)
    lib.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)

    wheels = work / "wheel"
    if wheels.exists():
        shutil.rmtree(wheels)
    run("uv", "build", "--wheel", "--out-dir", wheels, "--no-create-gitignore")
    (wheel,) = wheels.glob("cairn-*.whl")
    requirements = work / "requirements.txt"
    run("uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt",
        "--output-file", requirements, "--quiet")  # fmt: skip
    # --link-mode copy: uv hard-links from its cache by default, and the `strip` below rewrites files
    # in place when they have several links, which would change the cache and every venv sharing it
    # (running processes that mapped those modules die with SIGBUS).
    common = ["--link-mode", "copy", "--target", lib, "--python-version", spec["python"], "--python-platform", platform,
              "--only-binary", ":all:", "--no-deps", "--no-compile", "--quiet"]  # fmt: skip
    run("uv", "pip", "install", *common, "--require-hashes", "-r", requirements)
    run("uv", "pip", "install", *common, wheel)

    # Console scripts written by the installer point at this machine's Python; /usr/bin/cairn
    # replaces them. Byte code is compiled on the target by the postinstall script.
    shutil.rmtree(lib / "bin", ignore_errors=True)
    for cache in list(lib.rglob("__pycache__")):
        shutil.rmtree(cache)

    # Wheels ship compiled modules with their symbol tables; packages ship them stripped.
    # Written to a new file and renamed over the old one, so no other link to it can change.
    for so in lib.rglob("*.so"):
        stripped = so.with_name(so.name + ".stripped")
        subprocess.run(["strip", "--strip-unneeded", "-o", str(stripped), str(so)], check=True)
        stripped.chmod(so.stat().st_mode & 0o7777)
        os.replace(stripped, so)

    # Every compiled module must be for CPython 3.11 on this machine type and need no newer glibc.
    abi_tag = f"cpython-{spec['python'].replace('.', '')}-{machine}-linux-gnu"
    limit = tuple(int(p) for p in spec["glibc"].split("_"))
    compiled = sorted(lib.rglob("*.so"))
    for so in compiled:
        name = so.name
        if ".cpython-" in name and abi_tag not in name:
            raise SystemExit(f"{so}: built for another Python ({name}), expected {abi_tag}")
        if max_glibc(so) > limit:
            raise SystemExit(f"{so}: needs glibc {max_glibc(so)}, newer than {target}'s {limit}")

    packages = sorted(p.name.removesuffix(".dist-info") for p in lib.glob("*.dist-info"))
    write_copyright(lib, out / "usr" / "share" / "doc" / "cairn" / "copyright")
    info = {
        "version": project_version(),
        "target": target,
        "describe": spec["describe"],
        "python": spec["python"],
        "wheel_platform": f"manylinux_{spec['glibc']}_{machine}",
        "packages": packages,
        "compiled_modules": len(compiled),
        "min_glibc": ".".join(str(p) for p in max((max_glibc(so) for so in compiled), default=(2, 17))),
    }
    (out / "usr" / "lib" / "cairn" / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-version", action="store_true", help="print the project version and exit")
    parser.add_argument("--target", choices=sorted(TARGETS))
    parser.add_argument("--arch", default="amd64", choices=sorted(MACHINES))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "payload-work")
    args = parser.parse_args()
    if args.print_version:
        print(project_version())
        return
    if not args.target or not args.out:
        parser.error("--target and --out are required")
    info = build(args.target, args.arch, args.out.resolve(), args.work.resolve())
    print(f"payload for {info['describe']}: {len(info['packages'])} distributions, "
          f"{info['compiled_modules']} compiled modules, {info['wheel_platform']} -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
