"""SSL contexts for the agent's TLS listeners and outgoing RPC, rebuilt on every reload.

How it works
------------
`Contexts.build(config)` reads the certificate, key and CA files each listener's settings name
(RuntimeConfig.tls, resolved by appliance/config/tls.py) and builds Python `ssl.SSLContext`s:

* `https`: the HTTPS API listener's server context (None without a certificate);
* `rpc_server`: the server RPC port's server context (None without a certificate);
* `rpc_client`: outgoing RPC's client context when internal_rpc's `verify_outgoing` is set (None:
  dial in the clear), presenting this agent's certificate if it has one and verifying the
  server's chain against the CA; with `verify_server_hostname` it also checks the name
  `server.<dc>.<domain>` (`rpc_server_name`), so a client certificate cannot pose as a server.

Server contexts require a client certificate signed by the CA when the listener's
`verify_incoming` is set (CERT_REQUIRED), else ask for none. `tls_min_version` and
`tls_cipher_suites` (Go's names, mapped to OpenSSL's) apply to every context.

One `Contexts` is current per process (`install`, `current`): the agent installs it at start
and again on every reload (SIGHUP, `PUT /v1/agent/reload`). Listeners and dialers read
`current()` for each NEW connection, so a reload swaps certificates without touching connections
already open, which keep the context they were made with. A file that is missing or does not
parse raises TLSError, and a reload that fails keeps the contexts in place.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from appliance.config.runtime import RuntimeConfig, TLSSettings
from appliance.config.tls import CIPHER_SUITES

VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
            "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}
RPC_TLS = 3  # first byte of an RPC connection that is TLS from the next byte on (Consul's RPCTLS)


class TLSError(OSError):
    """TLS files that cannot be used (the message names the file); an OSError, as a file that cannot be read is."""


def _common(ctx: ssl.SSLContext, s: TLSSettings) -> None:
    ctx.minimum_version = VERSIONS[s.tls_min_version]
    if s.tls_cipher_suites:
        ctx.set_ciphers(":".join(CIPHER_SUITES[name] for name in s.tls_cipher_suites))


def _load_cert(ctx: ssl.SSLContext, s: TLSSettings) -> None:
    try:
        ctx.load_cert_chain(s.cert_file, s.key_file)
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"Failed to load cert/key pair {s.cert_file} and {s.key_file}: {err}") from None


def _load_ca(ctx: ssl.SSLContext, s: TLSSettings) -> None:
    try:
        ctx.load_verify_locations(cafile=s.ca_file or None, capath=s.ca_path or None)
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"Failed to load CA certificates from {s.ca_file or s.ca_path}: {err}") from None


def server_context(s: TLSSettings) -> ssl.SSLContext | None:
    """A listener's context; None when it has no certificate."""
    if not s.cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, s)
    _load_cert(ctx, s)
    if s.ca_file or s.ca_path:
        _load_ca(ctx, s)
    ctx.verify_mode = ssl.CERT_REQUIRED if s.verify_incoming else ssl.CERT_NONE
    return ctx


def client_context(s: TLSSettings) -> ssl.SSLContext | None:
    """Outgoing RPC's context; None unless verify_outgoing."""
    if not s.verify_outgoing:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common(ctx, s)
    if s.cert_file:
        _load_cert(ctx, s)
    _load_ca(ctx, s)
    ctx.check_hostname = s.verify_server_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_dns_names(peercert: object) -> set[str]:
    """The DNS names of a verified peer certificate (`getpeercert()`'s mapping); empty if none."""
    if not isinstance(peercert, dict):
        return set()
    return {value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"}


@dataclass(frozen=True)
class Contexts:
    https: ssl.SSLContext | None = None
    rpc_server: ssl.SSLContext | None = None
    rpc_client: ssl.SSLContext | None = None
    rpc_require_tls: bool = False  # internal_rpc.verify_incoming: plain connections are refused
    rpc_check_servers: bool = False  # internal_rpc.verify_server_hostname with verify_incoming
    domain: str = "consul"
    datacenter: str = "dc1"

    @classmethod
    def build(cls, config: RuntimeConfig) -> Contexts:
        rpc = config.tls.internal_rpc
        return cls(https=server_context(config.tls.https), rpc_server=server_context(rpc),
                   rpc_client=client_context(rpc), rpc_require_tls=rpc.verify_incoming,
                   rpc_check_servers=rpc.verify_incoming and rpc.verify_server_hostname,
                   domain=config.domain.rstrip(".") or "consul", datacenter=config.datacenter)

    def server_name(self, datacenter: str | None = None) -> str:
        """The name a server of `datacenter` (this one by default) has in its certificate."""
        return f"server.{datacenter or self.datacenter}.{self.domain}"


_current = Contexts()


def install(config: RuntimeConfig) -> Contexts:
    """Build the contexts of `config` and make them current (TLSError: the old ones stay)."""
    global _current
    _current = Contexts.build(config)
    return _current


def current() -> Contexts:
    return _current
