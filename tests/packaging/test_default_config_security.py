"""The packages' default cairn.hcl: its commented security block works once uncommented.

The block (between "# BEGIN security block" and "# END security block") turns on gossip
encryption, default-deny ACLs and TLS on every port. Uncommented as its comment says (one "#"
off each line), with a real gossip key, management token, CA and server certificate made by
`cairn keygen` and `cairn tls` in place of its placeholders and /etc/cairn.d/tls/, the file must
pass `cairn validate`; and the block must name the settings the hardening checklist asks for.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "packaging" / "common" / "cairn.d" / "cairn.hcl"


def cairn(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0, f"cairn {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def uncomment_security_block(text: str) -> str:
    lines = text.splitlines()
    begin, end = lines.index("# BEGIN security block"), lines.index("# END security block")
    assert begin < end
    block = lines[begin + 1:end]
    assert block and all(line.startswith("#") for line in block)
    return "\n".join([*lines[:begin], *(line[1:] for line in block), *lines[end + 1:]]) + "\n"


def test_the_security_block_names_the_hardening_settings():
    block = uncomment_security_block(SHIPPED.read_text())
    for setting in ('default_policy           = "deny"', "verify_incoming = true", "verify_outgoing = true",
                    "verify_server_hostname = true", "encrypt_verify_incoming = true", "https = 8501",
                    "enable_token_persistence = true"):
        assert setting in block, setting


def test_the_uncommented_security_block_validates(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    cairn("tls", "ca", "create", cwd=tls)
    cairn("tls", "cert", "create", "-server", "-dc", "dc1", cwd=tls)
    key = cairn("keygen", cwd=tmp_path).strip()
    text = uncomment_security_block(SHIPPED.read_text())
    for placeholder, value in (("<the output of cairn keygen>", key), ("<the output of uuidgen>", str(uuid.uuid4())),
                               ("/etc/cairn.d/tls/", f"{tls}/"), ("/var/lib/cairn", str(tmp_path / "data"))):
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    conf = tmp_path / "cairn.d"
    conf.mkdir()
    (conf / "cairn.hcl").write_text(text)
    assert "Configuration is valid" in cairn("validate", str(conf), cwd=tmp_path)


def test_the_block_with_its_placeholders_left_in_is_refused(tmp_path):
    conf = tmp_path / "cairn.d"
    conf.mkdir()
    (conf / "cairn.hcl").write_text(uncomment_security_block(SHIPPED.read_text()))
    done = subprocess.run([sys.executable, "-m", "appliance", "validate", str(conf)], capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode != 0 and "encrypt" in done.stdout + done.stderr
