"""The built-in certificate authority (provider `consul`): configuration, roots, leaves and
cross-signing (reference/connect.md §1).

How it works
------------
The CA's configuration is the map an operator writes (`PUT /v1/connect/ca/configuration`, the
agent's `connect { ca_config }`), kept as given; `parse_config` reads it with Consul's rules
(PascalCase or snake_case keys, durations as Go strings or nanoseconds, numbers given as text)
and refuses what Consul refuses, with its texts:

    leaf cert TTL must be greater or equal than 1h0m0s
    Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL (>=216h0m0s).
    EC key length must be one of (224, 256, 384, 521) bits
    must provide a private key when providing a root cert

A root is a self-signed CA certificate for the trust domain `<cluster id>.consul`: subject
`CN=pri-<8 base-36 chars>.consul.ca.<cluster id[:8]>.consul`, one URI SAN `spiffe://<trust
domain>`, key usage CertSign|CRLSign|DigitalSignature, and key identifiers that are SHA-256 of the
public key (Consul's KeyId). Its record (`root_record`) is Consul's CARoot: ID is the SHA-1
fingerprint of the certificate in colon hex, SigningKeyID the key identifier of the key that signs
leaves. Serial numbers come from one counter in the replicated state, shared by every
certificate the CA signs.

A leaf is signed from a CSR made by the agent that needs it, for a key that agent made
(appliance/connect/csr.py): one URI SAN, the service's or agent's SPIFFE ID; valid from one
minute ago for LeafCertTTL; ClientAuth and ServerAuth. When a new root replaces an old one, the
old key signs the new root (`cross_sign`, valid 7 days) and that certificate rides along with
every new leaf, so peers that still trust only the old root accept new leaves while both roots
are published.

Plain synchronous code over values: the time and the serial number are passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from appliance.config.durations import DurationError, coerce_duration, format_duration
from appliance.connect import spiffe

PROVIDER = "consul"
ROOT_NAME = "Consul CA Primary Cert"
CROSS_SIGN_TTL_S = 7 * 24 * 3600.0
CLOCK_SKEW_S = 60.0
# The map GET /v1/connect/ca/configuration shows when nothing was configured.
DEFAULT_CONFIG: dict[str, Any] = {"LeafCertTTL": "72h", "IntermediateCertTTL": "8760h", "RootCertTTL": "87600h"}
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_CURVES: dict[int, ec.EllipticCurve] = {224: ec.SECP224R1(), 256: ec.SECP256R1(), 384: ec.SECP384R1(),
                                        521: ec.SECP521R1()}


class CAError(ValueError):
    """A configuration, key or certificate the CA refuses; str() is Consul's text."""


@dataclass(frozen=True, slots=True)
class CAConfig:
    leaf_ttl_s: float = 72 * 3600.0
    intermediate_ttl_s: float = 8760 * 3600.0
    root_ttl_s: float = 87600 * 3600.0
    key_type: str = "ec"
    key_bits: int = 256
    private_key: str = ""
    root_cert: str = ""
    csr_max_per_second: float = 50.0


_KEYS = {"leafcertttl": "LeafCertTTL", "intermediatecertttl": "IntermediateCertTTL", "rootcertttl": "RootCertTTL",
         "privatekeytype": "PrivateKeyType", "privatekeybits": "PrivateKeyBits", "privatekey": "PrivateKey",
         "rootcert": "RootCert", "csrmaxpersecond": "CSRMaxPerSecond"}


def canonical(raw: dict[str, Any]) -> dict[str, Any]:
    """The known keys of a provider configuration under their PascalCase names (others dropped)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _KEYS.get(str(key).replace("_", "").replace("-", "").lower())
        if name is not None and value is not None:
            out[name] = value
    return out


def _duration(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value) / 1e9  # weakly typed: a number given as text is nanoseconds
        return coerce_duration(value)
    except DurationError as err:
        raise CAError(f"error decoding config: 1 error(s) decoding:\n\n* error decoding '{key}': {err}") from None


def _int(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            return int(value)
        return int(float(value)) if isinstance(value, (int, float)) else int(str(value).strip())
    except ValueError:
        raise CAError(f"error decoding config: 1 error(s) decoding:\n\n* cannot parse '{key}' as int: "
                      f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_config(raw: dict[str, Any] | None) -> CAConfig:
    """Consul's ParseConsulCAConfig and its Validate, on the operator's map."""
    conf = canonical(raw or {})
    for key in ("PrivateKey", "RootCert", "PrivateKeyType"):
        if key in conf and not isinstance(conf[key], str):
            raise CAError(f"error decoding config: 1 error(s) decoding:\n\n* '{key}' expected type 'string', "
                          f"got unconvertible type '{type(conf[key]).__name__}'")
    cfg = CAConfig(
        leaf_ttl_s=_duration(conf, "LeafCertTTL", 72 * 3600.0),
        intermediate_ttl_s=_duration(conf, "IntermediateCertTTL", 8760 * 3600.0),
        root_ttl_s=_duration(conf, "RootCertTTL", 87600 * 3600.0),
        key_type=(conf.get("PrivateKeyType") or "ec").lower(),
        key_bits=_int(conf, "PrivateKeyBits", 256 if (conf.get("PrivateKeyType") or "ec").lower() == "ec" else 2048),
        private_key=conf.get("PrivateKey") or "", root_cert=conf.get("RootCert") or "",
        csr_max_per_second=float(_int(conf, "CSRMaxPerSecond", 50)),
    )
    if not cfg.private_key and cfg.root_cert:
        raise CAError("must provide a private key when providing a root cert")
    if cfg.leaf_ttl_s < 3600:
        raise CAError("leaf cert TTL must be greater or equal than 1h0m0s")
    if cfg.leaf_ttl_s > 8760 * 3600:
        raise CAError("leaf cert TTL must be less than 8760h0m0s")
    if cfg.intermediate_ttl_s < 3 * 3600:
        raise CAError("Intermediate Cert TTL must be greater or equal than 3h")
    if cfg.intermediate_ttl_s < 3 * cfg.leaf_ttl_s:
        raise CAError("Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL "
                      f"(>={format_duration(3 * cfg.leaf_ttl_s)}).")
    if cfg.key_type == "ec":
        if cfg.key_bits not in _CURVES:
            raise CAError("EC key length must be one of (224, 256, 384, 521) bits")
    elif cfg.key_type == "rsa":
        if cfg.key_bits not in (2048, 4096):
            raise CAError("RSA key length must be 2048 or 4096 bits")
    else:
        raise CAError("private key type must be either 'ec' or 'rsa'")
    return cfg


# ------------------------------------------------------------------------------------ keys


def generate_key(key_type: str = "ec", bits: int = 256) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(_CURVES[bits])


def key_pem(key: PrivateKey) -> str:
    """EC keys as `EC PRIVATE KEY` (SEC1), RSA as `RSA PRIVATE KEY` (PKCS#1), as Consul writes them."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def load_key(pem: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        raise CAError(f"error parsing private key: {err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CAError("error parsing private key: only RSA and ECDSA keys are supported")
    return key


def load_cert(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as err:
        raise CAError(f"error parsing root cert: {err}") from None


def key_id(public_key: Any) -> bytes:
    """Consul's KeyId: SHA-256 over the DER of the public key's SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def serial_hex(serial: int) -> str:
    """A serial number as Consul's IssuedCert shows it: the big-endian bytes in colon hex ("08")."""
    return colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def key_type_bits(public_key: Any) -> tuple[str, int]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    return "ec", public_key.curve.key_size


def _hash_for(key: PrivateKey) -> hashes.SHA256:
    """The signature algorithm follows the signing key (Consul's SigAlgoForKey): ECDSA or RSA with SHA-256."""
    return hashes.SHA256()


def utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


def compact_uid(rand_bits: int) -> str:
    """Eight base-36 characters from a random integer (Consul's CompactUID)."""
    out = []
    for _ in range(8):
        rand_bits, digit = divmod(rand_bits, 36)
        out.append(_B36[digit])
    return "".join(out)


def root_common_name(cluster_id: str, uid: str) -> str:
    return f"pri-{uid}.consul.ca.{cluster_id[:8]}.consul"


# ------------------------------------------------------------------------------------ certificates


_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
           "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def key_usage(*granted: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{name: name in granted for name in _USAGES})


def make_root(key: PrivateKey, cluster_id: str, serial: int, now: float, ttl_s: float, uid: str) -> str:
    """A self-signed root for the cluster's trust domain, as PEM."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_common_name(cluster_id, uid))])
    kid = key_id(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(utc(now)).not_valid_after(utc(now + ttl_s))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage("digital_signature", "key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(kid, None, None), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
            spiffe.signing_uri(spiffe.trust_domain(cluster_id)))]), critical=False)
    )
    return cert.sign(key, _hash_for(key)).public_bytes(serialization.Encoding.PEM).decode()


def check_root(key: PrivateKey, root_pem: str) -> x509.Certificate:
    """An operator's root: a CA certificate whose public key is the given key's."""
    cert = load_cert(root_pem)
    pub = cert.public_key()
    if key_id(pub) != key_id(key.public_key()):
        raise CAError("error configuring provider: the private key does not match the root certificate")
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CAError("error parsing root cert: the certificate is not a CA")
    except x509.ExtensionNotFound:
        raise CAError("error parsing root cert: the certificate is not a CA") from None
    return cert


def fingerprint(cert: x509.Certificate) -> str:
    return colon_hex(cert.fingerprint(hashes.SHA1()))


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def root_record(root_pem: str, cluster_id: str, signing_key: PrivateKey) -> dict[str, Any]:
    """Consul's CARoot for a root certificate (without indexes, Active set by the caller)."""
    cert = load_cert(root_pem)
    pem = root_pem if root_pem.endswith("\n") else root_pem + "\n"
    ktype, kbits = key_type_bits(cert.public_key())
    return {
        "ID": fingerprint(cert), "Name": ROOT_NAME, "SerialNumber": cert.serial_number,
        "SigningKeyID": colon_hex(key_id(signing_key.public_key())), "ExternalTrustDomain": cluster_id,
        "NotBefore": _rfc3339(cert.not_valid_before_utc), "NotAfter": _rfc3339(cert.not_valid_after_utc),
        "RootCert": pem, "IntermediateCerts": None, "Active": True, "PrivateKeyType": ktype,
        "PrivateKeyBits": kbits,
    }


def cross_sign(old_key: PrivateKey, old_root_pem: str, new_root_pem: str, serial: int, now: float) -> str:
    """The new root's certificate signed by the old root's key (Consul's CrossSignCA): the new
    root's subject, key and extensions, the old root as issuer, valid 7 days."""
    old, new = load_cert(old_root_pem), load_cert(new_root_pem)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new.subject).issuer_name(old.subject)
        .public_key(new.public_key())
        .serial_number(serial)
        .not_valid_before(utc(now - CLOCK_SKEW_S)).not_valid_after(utc(now - CLOCK_SKEW_S + CROSS_SIGN_TTL_S))
    )
    for ext in new.extensions:
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier(key_id(old_key.public_key()), None, None),
                                    critical=False)
    return builder.sign(old_key, _hash_for(old_key)).public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class Leaf:
    cert_pem: str
    key_pem: str
    serial: int
    valid_after: float
    valid_before: float
    authority_key_id: str  # colon hex: the SigningKeyID of the root that signed it


def rfc3339(at: float) -> str:
    return _rfc3339(utc(at))
