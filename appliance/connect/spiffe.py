"""SPIFFE identities as Consul's Connect spells them (reference/connect.md §1.4).

    spiffe://<trust domain>                                     the signing CA
    spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<service>       a service
    spiffe://<trust domain>/agent/client/dc/<dc>/id/<node>      an agent

The trust domain is `<cluster id>.consul`, lower-cased; the `consul` label is fixed, whatever the
DNS domain. Parsing ignores the case of the host and percent-decodes the path segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRUST_DOMAIN_TLD = "consul"

_SERVICE = re.compile(r"^(?:/ap/([^/]+))?/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
_AGENT = re.compile(r"^(?:/ap/([^/]+))?/agent/client/dc/([^/]+)/id/([^/]+)$")


_UNRESERVED = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@]")


def quote(text: str) -> str:
    """Go's url.PathEscape for one path segment."""
    return _UNRESERVED.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)


def unquote(text: str) -> str:
    if "%" not in text:
        return text
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode()).decode(
        "utf-8", "replace")


class SpiffeError(ValueError):
    """Not a Connect identity."""


@dataclass(frozen=True, slots=True)
class ServiceID:
    host: str
    namespace: str
    datacenter: str
    service: str

    @property
    def uri(self) -> str:
        return service_uri(self.host, self.datacenter, self.service, self.namespace)


@dataclass(frozen=True, slots=True)
class AgentID:
    host: str
    datacenter: str
    agent: str


@dataclass(frozen=True, slots=True)
class SigningID:
    host: str


def trust_domain(cluster_id: str) -> str:
    return f"{cluster_id}.{TRUST_DOMAIN_TLD}".lower()


def service_uri(host: str, dc: str, service: str, namespace: str = "default") -> str:
    return f"spiffe://{host}/ns/{quote(namespace)}/dc/{quote(dc)}/svc/{quote(service)}"


def agent_uri(host: str, dc: str, node: str) -> str:
    return f"spiffe://{host}/agent/client/dc/{quote(dc)}/id/{quote(node)}"


def signing_uri(host: str) -> str:
    return f"spiffe://{host}"


def parse(uri: str) -> ServiceID | AgentID | SigningID:
    """A Connect identity from its URI; SpiffeError if it is none."""
    m = re.match(r"^spiffe://([^/?#]+)(/[^?#]*)?$", uri, re.IGNORECASE)
    if m is None:
        raise SpiffeError(f"not a SPIFFE URI: {uri}")
    host, path = m.group(1).lower(), m.group(2) or ""
    if path in ("", "/"):
        return SigningID(host)
    s = _SERVICE.match(path)
    if s is not None:
        return ServiceID(host, unquote(s.group(2)), unquote(s.group(3)), unquote(s.group(4)))
    a = _AGENT.match(path)
    if a is not None:
        return AgentID(host, unquote(a.group(2)), unquote(a.group(3)))
    raise SpiffeError(f"SPIFFE ID is not in the expected format: {uri}")
