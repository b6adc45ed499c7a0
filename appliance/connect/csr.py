"""Certificate signing requests: the agent that needs a certificate makes the key pair and a CSR,
a server signs the CSR and never sees the private key (Consul's ConnectCA.Sign; reference/connect.md §1.7).

How it works
------------
`make` is the agent's half: a CSR for one SPIFFE ID (its only URI SAN), signed by the agent's own
key (EC P-256 by default, what the active root's `PrivateKeyType`/`PrivateKeyBits` say). The
server's half reads it back (`parse`), checks what it names (`identity`) and what the caller
needs for it (`needs`), and `sign` issues the certificate for the CSR's public key.

`parse` refuses what Consul refuses, with its texts (`CSRError`):

    no PEM-encoded data found
    first PEM-block should be CERTIFICATE REQUEST type
    CSR SAN contains an invalid number of URIs: 2
    CSR SAN does not allow specifying email addresses
    SPIFFE ID must have 'spiffe' scheme
    SPIFFE ID is not in the expected format: <uri>

and, unlike Consul, a CSR whose signature does not verify against its own public key (a request
nobody holding the key made; Go's texts `x509: ECDSA verification failure` / `crypto/rsa:
verification error`).

`identity` is Consul's AuthorizeAndSignCertificate and SignCertificate checks on the SPIFFE ID:
a service ID (`spiffe://<td>/ns/default/dc/<dc>/svc/<name>`) needs `service:write` on the name,
must be of this datacenter (`SPIFFE ID in CSR from a different datacenter: dc2, we are dc1`) and
of this cluster's trust domain (`SPIFFE ID in CSR from a different trust domain: <host>, we are
<td>`); an agent ID (`spiffe://<td>/agent/client/dc/<dc>/id/<node>`) needs `node:write` on the
node, and its trust domain is set to this cluster's (an agent asks for its certificate before it
knows the roots, so Consul fixes the host instead of refusing it); anything else is refused
(`SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID`). The datacenter and trust domain
are checked only once the caller's permission has been (Consul's order: a caller without it
learns nothing about the cluster).

A signed leaf (`sign`) carries the CSR's URI (the agent's with this cluster's trust domain), DNS
names and IP addresses, the CSR's public key, the CA's key identifier, and is valid from one
minute ago for the leaf TTL, for client and server authentication (Consul's provider Sign).

Plain synchronous code over values: the time and the serial number are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.connect import ca, spiffe

IPAddress = IPv4Address | IPv6Address
_BEGIN = "-----BEGIN "
_CSR_TYPE = "CERTIFICATE REQUEST"


class CSRError(ValueError):
    """A CSR the CA refuses before any permission is looked at; str() is Consul's text."""


class WrongPlace(ValueError):
    """A CSR for another datacenter or trust domain (checked after the caller's permission)."""


@dataclass(frozen=True, slots=True)
class Request:
    csr: x509.CertificateSigningRequest
    uri: str
    ident: spiffe.ServiceID | spiffe.AgentID


def make(uri: str, key: ca.PrivateKey, dns_names: tuple[str, ...] = (),
         ip_addresses: tuple[IPAddress, ...] = ()) -> str:
    """A CSR for one SPIFFE ID signed by `key`, as PEM (Consul's connect.CreateCSR; an agent's
    auto_encrypt CSR also names its DNS names and IP addresses, which the leaf keeps)."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    sans += [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(i) for i in dict.fromkeys(ip_addresses)]
    builder = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _pem_block(text: str) -> tuple[str, bytes]:
    """The first PEM block of `text`: (its type, its DER)."""
    start = text.find(_BEGIN)
    if start < 0:
        raise CSRError("no PEM-encoded data found")
    head_end = text.find("-----", start + len(_BEGIN))
    kind = text[start + len(_BEGIN):head_end] if head_end > 0 else ""
    end = text.find(f"-----END {kind}-----", head_end)
    if head_end < 0 or end < 0:
        raise CSRError("no PEM-encoded data found")
    return kind, text[start:end + len(f"-----END {kind}-----")].encode()


def parse(pem: Any) -> Request:
    """A CSR's request: the CSR and the one SPIFFE ID it names (CSRError with Consul's text)."""
    if not isinstance(pem, str) or not pem.strip():
        raise CSRError("no PEM-encoded data found")
    kind, block = _pem_block(pem)
    if kind != _CSR_TYPE:
        raise CSRError("first PEM-block should be CERTIFICATE REQUEST type")
    try:
        csr = x509.load_pem_x509_csr(block)
        public_key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
        raise CSRError("x509: malformed certificate request") from None
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise CSRError("x509: unsupported public key type in certificate request")
    if not _signature_valid(csr):
        raise CSRError("crypto/rsa: verification error" if isinstance(public_key, rsa.RSAPublicKey)
                       else "x509: ECDSA verification failure")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    except (ValueError, x509.DuplicateExtension):
        raise CSRError("x509: malformed certificate request") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CSRError(f"CSR SAN contains an invalid number of URIs: {len(uris)}")
    if san.get_values_for_type(x509.RFC822Name):
        raise CSRError("CSR SAN does not allow specifying email addresses")
    uri = uris[0]
    if not uri.lower().startswith("spiffe:"):
        raise CSRError("SPIFFE ID must have 'spiffe' scheme")
    try:
        ident = spiffe.parse(uri)
    except spiffe.SpiffeError:
        raise CSRError(f"SPIFFE ID is not in the expected format: {uri}") from None
    if not isinstance(ident, (spiffe.ServiceID, spiffe.AgentID)):
        raise CSRError("SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID")
    return Request(csr, uri, ident)


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    try:
        return csr.is_signature_valid
    except (InvalidSignature, ValueError, TypeError):
        return False


def needs(req: Request) -> tuple[str, str]:
    """The permission the caller needs: ("service", name) or ("node", name), at write."""
    if isinstance(req.ident, spiffe.ServiceID):
        return "service", req.ident.service
    return "node", req.ident.agent


def place(req: Request, trust_domain: str, datacenter: str) -> str:
    """The URI the leaf will carry: the CSR's, checked against this cluster (WrongPlace if it is
    another's); an agent's host is set to this trust domain (module docstring)."""
    ident = req.ident
    if isinstance(ident, spiffe.ServiceID):
        if ident.datacenter != datacenter:
            raise WrongPlace(f"SPIFFE ID in CSR from a different datacenter: {ident.datacenter}, we are {datacenter}")
        if ident.host != trust_domain.lower():
            raise WrongPlace(f"SPIFFE ID in CSR from a different trust domain: {ident.host}, we are {trust_domain}")
        return req.uri
    return spiffe.agent_uri(trust_domain, ident.datacenter, ident.agent)


def sign(ca_key: ca.PrivateKey, ca_root_pem: str, req: Request, uri: str, serial: int, now: float,
         ttl_s: float) -> ca.Leaf:
    """The leaf for a CSR (its key stays the agent's: `key_pem` is empty)."""
    issuer = ca.load_cert(ca_root_pem)
    public_key = req.csr.public_key()
    try:
        san = req.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(d) for d in san.get_values_for_type(x509.DNSName)]
    names += [x509.IPAddress(i) for i in san.get_values_for_type(x509.IPAddress)]
    start = now - ca.CLOCK_SKEW_S
    akid = ca.key_id(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(req.csr.subject).issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(ca.utc(start)).not_valid_after(ca.utc(start + ttl_s))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(ca.key_usage("digital_signature", "key_encipherment", "data_encipherment", "key_agreement"),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier(ca.key_id(public_key)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(akid, None, None), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return ca.Leaf(cert.public_bytes(serialization.Encoding.PEM).decode(), "", serial, start, start + ttl_s,
                   ca.colon_hex(akid))
