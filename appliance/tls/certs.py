"""Certificates for agent TLS, as `cairn tls ca create` and `cairn tls cert create` make them.

How it works
------------
Pure functions over `cryptography` objects: nothing here reads or writes files (the CLI,
appliance/cli/tls.py, does). Every key is ECDSA P-256, written as a PEM `EC PRIVATE KEY` block;
every certificate is signed with ECDSA-SHA256 and has a random 128-bit serial and a
SubjectKeyIdentifier that is the SHA-256 of its public key (DER, SubjectPublicKeyInfo).

* The CA (`make_ca`): subject with Consul's fixed address fields and CN `Consul Agent CA
  <serial>`, BasicConstraints CA (critical), KeyUsage CertSign | CRLSign | DigitalSignature
  (critical), AuthorityKeyIdentifier = its own key id; with `name_constraint`, a critical
  NameConstraints permitting the extra names, `<domain>` and `localhost`; with `cluster_id`, the
  URI name `spiffe://<cluster_id>.<domain>`; `common_name` replaces the CN. Default 1825 days.
* A leaf (`make_leaf`): CN and DNS names from `leaf_names` (`server.<dc>.<domain>`,
  `client.<dc>.<domain>` or `cli.<dc>.<domain>` and `localhost`, the additional names before the
  built-in ones, IP 127.0.0.1 for servers and clients), KeyUsage DigitalSignature |
  KeyEncipherment, ExtendedKeyUsage ServerAuth + ClientAuth (none for cli). Default 365 days.

`file_prefix` and `free_index` give Consul's file names (`dc1-server-consul-0.pem`, the first
free number). docs/tls.md walks through using them.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 1825
LEAF_DAYS = 365
KINDS = ("server", "client", "cli")
MAX_INDEX = 10000
CA_SUBJECT = (
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.POSTAL_CODE, "94105"),
    (NameOID.STATE_OR_PROVINCE_NAME, "CA"),
    (NameOID.LOCALITY_NAME, "San Francisco"),
    (NameOID.STREET_ADDRESS, "101 Second Street"),
    (NameOID.ORGANIZATION_NAME, "HashiCorp Inc."),
)


class CertError(ValueError):
    """A CA or key that cannot sign (the message is the CLI's error line)."""


@dataclass(frozen=True)
class Issued:
    """A new certificate and its key, both as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """`-----BEGIN EC PRIVATE KEY-----` (SEC1), as Consul writes keys."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def _validity(builder: x509.CertificateBuilder, days: int, now: datetime.datetime | None) -> x509.CertificateBuilder:
    start = now or datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))


def make_ca(*, days: int = CA_DAYS, domain: str = "consul", name_constraint: bool = False,
            additional_constraints: Sequence[str] = (), common_name: str = "", cluster_id: str = "",
            now: datetime.datetime | None = None) -> Issued:
    """A self-signed agent CA (see the module docstring)."""
    key = new_key()
    serial = secrets.randbits(128)
    subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in CA_SUBJECT]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"Consul Agent CA {serial}")])
    kid = key_id(key.public_key())
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(serial)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(kid, None, None), critical=False))
    if cluster_id:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{cluster_id}.{domain}")]), critical=False)
    if name_constraint:
        names = list(dict.fromkeys([*additional_constraints, domain, "localhost"]))
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(n) for n in names], excluded_subtrees=None),
            critical=True)
    cert = _validity(builder, days, now).sign(key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def leaf_names(kind: str, *, dc: str = "dc1", domain: str = "consul", node: str = "",
               additional_dns: Sequence[str] = (),
               additional_ips: Sequence[str] = ()) -> tuple[str, list[str], list[str]]:
    """(common name, DNS names, IP addresses) of a `kind` certificate, in Consul's order."""
    if kind not in KINDS:
        raise ValueError(f"unknown certificate kind {kind!r}")
    name = f"{kind}.{dc}.{domain}"
    if kind == "cli":  # Consul drops the additional names of a cli certificate
        return name, [name, "localhost"], []
    dns = [d.strip() for d in additional_dns if d.strip()]
    if node and kind == "server":
        dns.append(f"{node}.{name}")
    dns += [name, "localhost"]
    ips = [str(ipaddress.ip_address(ip.strip())) for ip in additional_ips if ip.strip()] + ["127.0.0.1"]
    return name, list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def load_ca(cert_pem: bytes, key_pem_bytes: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and its key; CertError with Consul's texts."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise CertError(f"Error reading CA: {err}") from None
    try:
        key = serialization.load_pem_private_key(key_pem_bytes, password=None)
    except (ValueError, TypeError) as err:
        raise CertError(f"Error reading CA key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"unknown PEM block type for signing key: {type(key).__name__}")
    return cert, key


def make_leaf(kind: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, days: int = LEAF_DAYS,
              dc: str = "dc1", domain: str = "consul", node: str = "", additional_dns: Sequence[str] = (),
              additional_ips: Sequence[str] = (), now: datetime.datetime | None = None) -> Issued:
    """A server, client or cli certificate signed by the CA (see the module docstring)."""
    cn, dns, ips = leaf_names(kind, dc=dc, domain=domain, node=node, additional_dns=additional_dns,
                              additional_ips=additional_ips)
    key = new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(secrets.randbits(128))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.SubjectKeyIdentifier(key_id(key.public_key())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(key_id(ca_key.public_key()), None, None), critical=False))
    if kind != "cli":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = _validity(builder, days, now).sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def file_prefix(kind: str, dc: str, domain: str) -> str:
    return f"{dc}-{kind}-{domain}"


def free_index(prefix: str, exists: Callable[[str], bool]) -> int:
    """The first n for which neither `<prefix>-<n>.pem` nor its key exists."""
    for n in range(MAX_INDEX + 1):
        if not exists(f"{prefix}-{n}.pem") and not exists(f"{prefix}-{n}-key.pem"):
            return n
    raise CertError(f"Error: no free file name for {prefix}-<n>.pem")
