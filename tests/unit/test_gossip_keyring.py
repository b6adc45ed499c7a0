"""The gossip keyring (appliance/gossip/keyring.py): memberlist's key rules and sealed format.

Rules checked (reference/gossip-notes.md §7.1-7.2): keys are 16, 24 or 32 bytes; the first key is
the primary and the only one that encrypts; decryption tries every key; install appends, use
moves to the front, removing the primary is refused, removing an absent key is a no-op. Sealed
messages are `[1][12-byte nonce][ciphertext][16-byte tag]` (29 bytes of overhead), authenticated
with the caller's additional data; anything else is a KeyringError. The keyring file is a JSON
list of base64 keys, primary first, mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from appliance.gossip.keyring import (
    ENCRYPT_OVERHEAD,
    Keyring,
    KeyringError,
    decode_key,
    encode_key,
)
from appliance.gossip.keyring_file import load_file, save_file
from appliance.gossip.pool_setup import load_keyring

K16, K24, K32 = b"a" * 16, b"b" * 24, b"c" * 32


def test_key_sizes_and_base64_errors():
    for key in (K16, K24, K32):
        assert decode_key(encode_key(key)) == key
    with pytest.raises(KeyringError, match="key size must be 16, 24 or 32 bytes"):
        decode_key(base64.b64encode(b"x" * 20).decode())
    with pytest.raises(KeyringError, match="Failed to decode key from base64"):
        decode_key("not base64!")
    with pytest.raises(KeyringError):
        Keyring([b"short"])


def test_primary_encrypts_every_key_decrypts():
    old, new = Keyring([K32]), Keyring([K32])
    assert new.install(K16) is True and new.install(K16) is False  # install is idempotent
    assert new.primary == K32  # install never changes the primary
    sealed_old = old.encrypt(b"hello")
    assert new.decrypt(sealed_old) == b"hello"
    new.use(K16)
    assert new.keys == [K16, K32]
    sealed_new = new.encrypt(b"world")
    with pytest.raises(KeyringError, match="no installed keys could decrypt"):
        old.decrypt(sealed_new)  # a member without the new key cannot read it
    assert new.decrypt(sealed_old) == b"hello"  # the old key still decrypts during a rotation


def test_use_and_remove_rules():
    ring = Keyring([K32, K16])
    with pytest.raises(KeyringError, match="Requested key is not in the keyring"):
        ring.use(K24)
    with pytest.raises(KeyringError, match="Removing the primary key is not allowed"):
        ring.remove(K32)
    ring.remove(K24)  # absent: no-op (memberlist)
    ring.remove(K16)
    assert ring.keys == [K32]


def test_sealed_format_and_authentication():
    ring = Keyring([K32], nonce_source=lambda n: b"\x07" * n)
    sealed = ring.encrypt(b"payload", b"aad")
    assert sealed[0] == 1 and sealed[1:13] == b"\x07" * 12
    assert len(sealed) == len(b"payload") + ENCRYPT_OVERHEAD == len(b"payload") + 29
    assert ring.decrypt(sealed, b"aad") == b"payload"
    with pytest.raises(KeyringError):
        ring.decrypt(sealed, b"other aad")  # the header cannot be swapped
    tampered = bytearray(sealed)
    tampered[20] ^= 1
    with pytest.raises(KeyringError):
        ring.decrypt(bytes(tampered), b"aad")
    with pytest.raises(KeyringError, match="unsupported encryption version"):
        ring.decrypt(b"\x00" + sealed[1:], b"aad")
    with pytest.raises(KeyringError, match="too small"):
        ring.decrypt(sealed[:28])
    with pytest.raises(KeyringError):
        Keyring().encrypt(b"x")  # no keys: nothing to encrypt with


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_keyring_error(data):
    ring = Keyring([K16, K32])
    try:
        ring.decrypt(data)
    except KeyringError:
        pass


def test_keyring_file_round_trip_and_mode(tmp_path):
    path = str(tmp_path / "serf" / "local.keyring")
    save_file(path, [K32, K16])
    assert json.loads(Path(path).read_text()) == [encode_key(K32), encode_key(K16)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_file(path) == [K32, K16]
    with open(path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(KeyringError, match="Failed to read keyring file"):
        load_file(path)


def test_agent_keyring_file_wins_over_encrypt(tmp_path):
    """Consul's setupKeyrings: the file is created from `encrypt` once, then it wins."""
    path = str(tmp_path / "serf" / "local.keyring")
    ring = load_keyring(encode_key(K32), path)
    assert ring.keys == [K32] and load_file(path) == [K32]
    save_file(path, [K16, K32])  # as after `cairn keyring -install/-use`
    assert load_keyring(encode_key(K32), path).keys == [K16, K32]
    ring = load_keyring(encode_key(K24), path)  # a new encrypt key is added, not made primary
    assert ring.keys == [K16, K32, K24] and load_file(path) == [K16, K32, K24]
    assert load_keyring("", "").keys == []  # no key, no file: not encrypted
