"""The gossip keyring: AES-GCM keys for encrypting gossip packets and streams, as memberlist does.

How it works
------------
A keyring is an ordered list of 16, 24 or 32-byte keys (AES-128/192/256, chosen by length).
The first key is the *primary*: it is the only one that encrypts. Decryption tries every key in
order, so during a rotation members still read traffic sealed with a key they no longer use as
primary. Rotation is install (append) -> use (move to the front) -> remove; removing the primary
is refused ("Removing the primary key is not allowed"), as in memberlist.

Sealed format (memberlist's encryption version 1, no padding)::

    [version u8 = 1][nonce: 12 random bytes][AES-GCM ciphertext][tag: 16 bytes]

so a sealed message is `ENCRYPT_OVERHEAD` (29) bytes longer than the plaintext. The additional
authenticated data is supplied by the caller (the transport passes a stream's frame header, so a
header cannot be swapped). Anything shorter than the overhead, of another version, or that no
key authenticates raises `KeyringError`: the transport counts it and drops the packet.

Nonces come from `os.urandom` (a seeded generator would repeat nonces across restarts, which
breaks GCM); tests may inject `nonce_source`. The keyring file on disk is keyring_file.py's.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTION_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
ENCRYPT_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES  # 29, memberlist's v1 overhead
KEY_SIZES = (16, 24, 32)


class KeyringError(ValueError):
    """A key that cannot be used, a refused keyring change, or a message that does not decrypt."""


def decode_key(text: str) -> bytes:
    """A key from its base64 form, with the errors Consul prints."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"Failed to decode key from base64: illegal base64 data in {text!r}") from None
    validate_key(key)
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


@functools.cache
def _aes_gcm() -> tuple[type[AESGCM], type[Exception]]:
    """cryptography's AES-GCM and its authentication failure, loaded with the first key: a pool
    without encryption never loads the library (about 7 MB of an agent's memory)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM, InvalidTag


def validate_key(key: bytes) -> None:
    if len(key) not in KEY_SIZES:
        raise KeyringError("key size must be 16, 24 or 32 bytes")


class Keyring:
    """Ordered keys, primary first. Encryption is on iff the ring is not empty."""

    def __init__(self, keys: Iterable[bytes] = (), *, nonce_source: Callable[[int], bytes] = os.urandom) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        self._nonce = nonce_source
        for key in keys:
            self.install(key)

    # ------------------------------------------------------------------ key management

    @property
    def keys(self) -> list[bytes]:
        return list(self._keys)

    @property
    def primary(self) -> bytes | None:
        return self._keys[0] if self._keys else None

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def install(self, key: bytes) -> bool:
        """Add a key (it becomes primary only if the ring was empty). False if already there."""
        validate_key(key)
        if key in self._ciphers:
            return False
        self._keys.append(key)
        self._ciphers[key] = _aes_gcm()[0](key)
        return True

    def use(self, key: bytes) -> None:
        """Make an installed key the primary."""
        if key not in self._ciphers:
            raise KeyringError("Requested key is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Drop a key; the primary cannot be removed; an absent key is a no-op (memberlist)."""
        if self._keys and key == self._keys[0]:
            raise KeyringError("Removing the primary key is not allowed")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    # ------------------------------------------------------------------ sealing

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        primary = self.primary
        if primary is None:
            raise KeyringError("no keys in the keyring")
        nonce = self._nonce(NONCE_BYTES)
        return bytes((ENCRYPTION_VERSION,)) + nonce + self._ciphers[primary].encrypt(nonce, plaintext, aad)

    def decrypt(self, data: bytes, aad: bytes = b"") -> bytes:
        if len(data) < ENCRYPT_OVERHEAD:
            raise KeyringError("payload is too small to decrypt")
        if data[0] != ENCRYPTION_VERSION:
            raise KeyringError(f"unsupported encryption version {data[0]}")
        nonce, sealed = data[1:1 + NONCE_BYTES], data[1 + NONCE_BYTES:]
        invalid_tag = _aes_gcm()[1] if self._keys else KeyringError
        for key in self._keys:
            try:
                return self._ciphers[key].decrypt(nonce, sealed, aad)
            except invalid_tag:
                continue
        raise KeyringError("no installed keys could decrypt the message")
