"""The proxy's TLS: contexts built from the agent's leaf certificate and CA roots, and the peer's
SPIFFE identity.

Both sides require and verify the peer's certificate against the current roots (Consul's
`RequireAndVerifyClientCert` on the public listener; a client that checks the chain but not a
host name, since identities are SPIFFE URIs, checked after the handshake). TLS 1.2 at least.
A new leaf or new roots build new contexts; connections already up keep the session they have,
new handshakes use the newest (Consul's dynamicTLSConfig, reference/connect.md §6.3).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    serial: str  # the leaf's serial number, for the log
    roots: tuple[str, ...]  # the IDs of the roots trusted


def _roots_pem(roots: dict[str, Any]) -> str:
    pems = []
    for root in roots.get("Roots") or ():
        pems.append(root.get("RootCert", ""))
        pems.extend(root.get("IntermediateCerts") or ())
    return "\n".join(p.strip() + "\n" for p in pems if p and p.strip())


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl loads a certificate chain only from files: a private directory, removed at once."""
    with tempfile.TemporaryDirectory(prefix="cairn-proxy-") as tmp:
        os.chmod(tmp, 0o700)
        cert, key = os.path.join(tmp, "leaf.pem"), os.path.join(tmp, "leaf.key")
        with open(cert, "w", encoding="ascii") as f:
            f.write(cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert, key)


def _context(side: int, cadata: str, leaf: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # identities are SPIFFE URIs, checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=cadata)
    _load_chain(ctx, leaf["CertPEM"], leaf["PrivateKeyPEM"])
    return ctx


def build(leaf: dict[str, Any], roots: dict[str, Any]) -> Contexts:
    """Server and client contexts for a leaf (`/v1/agent/connect/ca/leaf/<svc>`) and the roots
    (`/v1/agent/connect/ca/roots`); ssl.SSLError or ValueError when they do not load."""
    cadata = _roots_pem(roots)
    if not cadata:
        raise ValueError("no CA roots")
    ids = tuple(str(r.get("ID", "")) for r in roots.get("Roots") or ())
    return Contexts(_context(ssl.PROTOCOL_TLS_SERVER, cadata, leaf), _context(ssl.PROTOCOL_TLS_CLIENT, cadata, leaf),
                    str(leaf.get("SerialNumber", "")), ids)


def peer_identity(ssl_object: Any) -> tuple[str, str]:
    """(first URI SAN, serial number) of the verified peer certificate; ("", "") without one."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return "", ""
    uri = next((value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"), "")
    serial = str(cert.get("serialNumber", ""))
    return uri, ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)).lower()
