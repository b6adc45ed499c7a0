"""The agent's leaf certificate cache: one leaf per service name, renewed before it expires
(reference/connect.md §1.7, §1.8).

How it works
------------
An entry holds the leaf (certificate, key, serial, validity), the index it was issued at (its
CreateIndex/ModifyIndex; the `X-Consul-Index` of the answer) and the instant to renew it. The
renewal instant is Consul's soft expiry: a uniformly random point between 60 % and 90 % of the
leaf's lifetime (from now if 60 % has passed; at once past 90 %, or when the leaf lives less
than ten minutes). When the CA's active root changes (its SigningKeyID is not the leaf's
AuthorityKeyId), the entry is renewed within a 30 s jitter window, so a rotation does not make
every agent ask at the same instant; a non-blocking request renews at once (Consul's
MustRevalidate: a plain GET never answers a leaf of a rotated-out root). The cache holds the leaves of
at most MAX_ENTRIES service names; the one asked for least recently goes first.

Signing is limited by the CA's `CSRMaxPerSecond` (50 by default; `RateLimit`): over the limit a
leaf that is still valid keeps being served, and a request with none gets Consul's 429 `Rate
limit reached, try again later`. `body` is Consul's IssuedCert; `leaf_of` reads one back with the
agent's own key (the agent made the key pair and a CSR, and a server signed it: csr.py). Time
and randomness (a uniform number in [0, 1)) are passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from appliance.connect import ca

CA_CHANGE_JITTER_S = 30.0
MIN_LIFETIME_S = 600.0
MAX_ENTRIES = 4096  # service names one agent keeps leaves for


@dataclass(slots=True)
class Entry:
    service: str
    uri: str
    leaf: ca.Leaf
    chain: str  # the leaf followed by the active root's intermediates (the cross-signed root)
    index: int
    renew_at: float


def soft_expiry(valid_after: float, valid_before: float, now: float, rand: float) -> float:
    life = valid_before - valid_after
    if life < MIN_LIFETIME_S:
        return now
    low, high = valid_after + 0.6 * life, valid_after + 0.9 * life
    if now >= high:
        return now
    low = max(low, now)
    return low + (high - low) * rand


class RateLimit:
    """A token bucket for signing (the CA's CSRMaxPerSecond; 0 turns it off): up to `per_second`
    leaves a second, a burst of as many."""

    def __init__(self) -> None:
        self.tokens = 0.0
        self.at: float | None = None

    def take(self, per_second: float, now: float) -> bool:
        if per_second <= 0:
            return True
        burst = max(1.0, per_second)
        self.tokens = burst if self.at is None else min(burst, self.tokens + (now - self.at) * per_second)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class LeafCache:
    """The leaves by service name, least recently asked first; at most `max_entries` (the one
    asked for least recently goes first: a later request signs it again)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.max_entries = max_entries

    def get(self, service: str) -> Entry | None:
        entry = self.entries.get(service)
        if entry is not None:
            self.entries.move_to_end(service)
        return entry

    def put(self, service: str, uri: str, leaf: ca.Leaf, intermediates: list[str] | None, index: int, now: float,
            rand: float) -> Entry:
        entry = Entry(service, uri, leaf, chain_of(leaf.cert_pem, intermediates), index,
                      soft_expiry(leaf.valid_after, leaf.valid_before, now, rand))
        self.entries[service] = entry
        self.entries.move_to_end(service)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry

    def root_changed(self, entry: Entry, signing_key_id: str, now: float, rand: float) -> None:
        """The active root is not the one that signed this leaf: renew within the jitter window."""
        if entry.leaf.authority_key_id != signing_key_id:
            entry.renew_at = min(entry.renew_at, now + CA_CHANGE_JITTER_S * rand)

    def stale(self, entry: Entry, now: float) -> bool:
        """Due for renewal (its soft expiry, or the root changed and its jitter has passed) or expired."""
        return now >= entry.renew_at or now >= entry.leaf.valid_before


def chain_of(cert_pem: str, intermediates: list[str] | None) -> str:
    """A leaf followed by the intermediates of the root that signed it, one PEM after the other."""
    return cert_pem + "".join(p if p.endswith("\n") else p + "\n" for p in intermediates or ())


def issued_body(leaf: ca.Leaf, chain: str, kind: str, name: str, uri: str, index: int) -> dict[str, Any]:
    """Consul's IssuedCert for a service's (`kind` "Service") or an agent's ("Agent") leaf, without
    its private key (what a server answers a CSR with)."""
    return {"SerialNumber": ca.serial_hex(leaf.serial), "CertPEM": chain, kind: name, f"{kind}URI": uri,
            "ValidAfter": ca.rfc3339(leaf.valid_after), "ValidBefore": ca.rfc3339(leaf.valid_before),
            "CreateIndex": index, "ModifyIndex": index}


def body(entry: Entry) -> dict[str, Any]:
    """The IssuedCert an agent serves for a service: with the private key it made."""
    return {"PrivateKeyPEM": entry.leaf.key_pem,
            **issued_body(entry.leaf, entry.chain, "Service", entry.service, entry.uri, entry.index)}


_PEM_END = "-----END CERTIFICATE-----"


def leaf_of(issued: dict[str, Any]) -> tuple[ca.Leaf, list[str]]:
    """An IssuedCert (`body`) read back: the leaf and the intermediates its CertPEM carries after
    it (ValueError, KeyError or TypeError when it is not one)."""
    chain = [p.strip() + "\n" + _PEM_END + "\n" for p in issued["CertPEM"].split(_PEM_END) if p.strip()]
    if not chain:
        raise ValueError("no certificate")
    cert = x509.load_pem_x509_certificate(chain[0].encode())
    akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    key = issued["PrivateKeyPEM"]
    if not isinstance(key, str) or "PRIVATE KEY" not in key:
        raise ValueError("no private key")
    return (ca.Leaf(chain[0], key, cert.serial_number, cert.not_valid_before_utc.timestamp(),
                    cert.not_valid_after_utc.timestamp(), ca.colon_hex(akid)), chain[1:])
