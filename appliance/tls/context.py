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

auto_encrypt (`AutoCert`, `install_auto`): a client agent's certificate and key from a server,
held in memory, serve wherever the agent has no cert_file (outgoing RPC, HTTPS); the roots that
came with it (the Connect CA's and the servers' CA) are trusted besides ca_file, on a client
agent and, for the Connect roots, on servers with allow_tls (so client certificates chained to
the Connect root pass the RPC port's verify_incoming). `rpc_insecure` is the RPC port's context
for RPC_TLS_INSECURE connections: the server's certificate, no client certificate asked for.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from appliance.config.runtime import RuntimeConfig, TLSSettings
from appliance.config.tls import CIPHER_SUITES

VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
            "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}
RPC_TLS = 3  # first byte of an RPC connection that is TLS from the next byte on (Consul's RPCTLS)
RPC_TLS_INSECURE = 7  # the same without a client certificate: auto_encrypt's first request (Consul's RPCTLSInsecure)


class TLSError(OSError):
    """TLS files that cannot be used (the message names the file); an OSError, as a file that cannot be read is."""


def _common(ctx: ssl.SSLContext, s: TLSSettings) -> None:
    ctx.minimum_version = VERSIONS[s.tls_min_version]
    if s.tls_cipher_suites:
        ctx.set_ciphers(":".join(CIPHER_SUITES[name] for name in s.tls_cipher_suites))


def _load_cert(ctx: ssl.SSLContext, s: TLSSettings, auto: AutoCert) -> None:
    """The listener's cert_file and key_file, or else auto_encrypt's certificate (from memory:
    `load_cert_chain` reads files only, so through a private temporary file removed at once)."""
    if not s.cert_file:
        fd, path = tempfile.mkstemp(prefix="auto-encrypt-", suffix=".pem")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(auto.cert_pem + "\n" + auto.key_pem)
            ctx.load_cert_chain(path)
        except (OSError, ssl.SSLError) as err:
            raise TLSError(f"Failed to load cert/key pair: {err}") from None
        finally:
            os.unlink(path)
        return
    try:
        ctx.load_cert_chain(s.cert_file, s.key_file)
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"Failed to load cert/key pair {s.cert_file} and {s.key_file}: {err}") from None


def _load_ca(ctx: ssl.SSLContext, s: TLSSettings, auto: AutoCert) -> None:
    try:
        if s.ca_file or s.ca_path:
            ctx.load_verify_locations(cafile=s.ca_file or None, capath=s.ca_path or None)
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"Failed to load CA certificates from {s.ca_file or s.ca_path}: {err}") from None
    for pem in (p for p in auto.roots if p):
        try:
            ctx.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as err:
            raise TLSError(f"Failed to load auto_encrypt CA certificates: {err}") from None


def _has_ca(s: TLSSettings, auto: AutoCert) -> bool:
    return bool(s.ca_file or s.ca_path or auto.roots)


def server_context(s: TLSSettings, auto: AutoCert | None = None, *, insecure: bool = False) -> ssl.SSLContext | None:
    """A listener's context; None when it has no certificate (neither its own nor auto_encrypt's).
    `insecure`: asks for no client certificate whatever verify_incoming says (the RPC port's
    RPC_TLS_INSECURE connections, which may only ask for an auto_encrypt certificate)."""
    auto = auto or AutoCert()
    if not s.cert_file and not auto.cert_pem:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, s)
    _load_cert(ctx, s, auto)
    if _has_ca(s, auto):
        _load_ca(ctx, s, auto)
    ctx.verify_mode = ssl.CERT_REQUIRED if s.verify_incoming and not insecure else ssl.CERT_NONE
    return ctx


def client_context(s: TLSSettings, auto: AutoCert | None = None, auto_tls: bool = False) -> ssl.SSLContext | None:
    """Outgoing RPC's context; None unless verify_outgoing or auto_encrypt.tls (Consul: TLS when
    either is set). auto_encrypt's certificate is presented when the agent has none of its own;
    without any CA (an auto_encrypt client before its first answer) the server is not verified."""
    auto = auto or AutoCert()
    if not s.verify_outgoing and not auto_tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common(ctx, s)
    if s.cert_file or auto.cert_pem:
        _load_cert(ctx, s, auto)
    if not _has_ca(s, auto):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    _load_ca(ctx, s, auto)
    ctx.check_hostname = s.verify_server_hostname or auto.verify_server_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_dns_names(peercert: object) -> set[str]:
    """The DNS names of a verified peer certificate (`getpeercert()`'s mapping); empty if none."""
    if not isinstance(peercert, dict):
        return set()
    return {value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"}


def peer_spiffe(peercert: object) -> bool:
    """Whether a verified peer certificate names a SPIFFE ID (a Connect CA's leaf or agent certificate)."""
    if not isinstance(peercert, dict):
        return False
    return any(kind == "URI" and value.lower().startswith("spiffe://")
               for kind, value in peercert.get("subjectAltName", ()))


@dataclass(frozen=True)
class AutoCert:
    """auto_encrypt's material, held in memory (appliance/rpc/autoencrypt.py): a client agent's
    certificate chain and key and the roots a server answered with (the Connect CA's and the
    servers' own CA), or on a server with allow_tls the Connect CA's roots alone."""

    cert_pem: str = ""
    key_pem: str = ""
    roots: tuple[str, ...] = ()  # PEM certificates to trust besides ca_file / ca_path
    verify_server_hostname: bool = False  # the servers' setting, from their answer


@dataclass(frozen=True)
class Contexts:
    https: ssl.SSLContext | None = None
    rpc_server: ssl.SSLContext | None = None
    rpc_insecure: ssl.SSLContext | None = None  # RPC_TLS_INSECURE: no client certificate asked for
    rpc_client: ssl.SSLContext | None = None
    rpc_require_tls: bool = False  # internal_rpc.verify_incoming: plain connections are refused
    rpc_check_servers: bool = False  # internal_rpc.verify_server_hostname with verify_incoming
    domain: str = "consul"
    datacenter: str = "dc1"

    @classmethod
    def build(cls, config: RuntimeConfig, auto: AutoCert | None = None) -> Contexts:
        auto = auto or AutoCert()
        rpc = config.tls.internal_rpc
        return cls(https=server_context(config.tls.https, auto), rpc_server=server_context(rpc, auto),
                   rpc_insecure=server_context(rpc, auto, insecure=True),
                   rpc_client=client_context(rpc, auto, config.tls.auto_encrypt_tls),
                   rpc_require_tls=rpc.verify_incoming,
                   rpc_check_servers=rpc.verify_incoming and rpc.verify_server_hostname,
                   domain=config.domain.rstrip(".") or "consul", datacenter=config.datacenter)

    def server_name(self, datacenter: str | None = None) -> str:
        """The name a server of `datacenter` (this one by default) has in its certificate."""
        return f"server.{datacenter or self.datacenter}.{self.domain}"


_current = Contexts()
_config: RuntimeConfig | None = None
_auto = AutoCert()


def install(config: RuntimeConfig) -> Contexts:
    """Build the contexts of `config` (with the auto_encrypt material in place) and make them
    current (TLSError: the old ones stay)."""
    global _current, _config
    _current = Contexts.build(config, _auto)
    _config = config
    return _current


def install_auto(auto: AutoCert) -> Contexts:
    """New auto_encrypt material (a certificate, renewed roots): the contexts are rebuilt with the
    configuration last installed; new connections use them, open ones keep theirs."""
    global _current, _auto
    if _config is None:
        raise TLSError("no TLS configuration installed")
    _current = Contexts.build(_config, auto)
    _auto = auto
    return _current


def auto_cert() -> AutoCert:
    return _auto


def current() -> Contexts:
    return _current
