"""The keyring file on disk, for the gossip drivers (the keyring itself is sans-IO: keyring.py).

How it works
------------
Consul's keyring file is a JSON list of base64 keys, primary first, mode 0600, at
`serf/local.keyring` under the data directory (the WAN pool's is `serf/remote.keyring`).
`load_file` reads one (a malformed file or key raises `KeyringError` with Consul's text);
`save_file` writes one atomically: a temporary file beside it, fsync, then rename, so a crash
leaves the old ring or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from appliance.gossip.keyring import KeyringError, decode_key, encode_key

KEYRING_FILE = os.path.join("serf", "local.keyring")


def load_file(path: str) -> list[bytes]:
    """Keys from a keyring file (JSON list of base64 strings, primary first)."""
    with open(path, encoding="utf-8") as fh:
        try:
            raw = json.load(fh)
        except ValueError as err:
            raise KeyringError(f"Failed to read keyring file {path}: {err}") from None
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise KeyringError(f"Failed to read keyring file {path}: not a JSON list of base64 keys")
    return [decode_key(k) for k in raw]


def save_file(path: str, keys: Iterable[bytes]) -> None:
    """Write the keyring file atomically with mode 0600."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump([encode_key(k) for k in keys], fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
