"""auto_encrypt: a client agent's TLS certificate from a server (Consul's AutoEncrypt.Sign).

How it works
------------
Client agent (`AutoEncrypt`, with `auto_encrypt { tls = true }`): before anything else talks to
a server, it makes an EC P-256 key pair and a CSR for its agent SPIFFE ID
(`spiffe://dummy.trustdomain/agent/client/dc/<dc>/id/<node>`: the server sets the trust domain) with
the DNS names `localhost` and `auto_encrypt.dns_san`, the IPs 127.0.0.1, ::1 and
`auto_encrypt.ip_san`. It sends one AUTO_ENCRYPT frame `{CSR, Token, Datacenter}` (the agent
token) to a server over an RPC_TLS_INSECURE connection: TLS without a client certificate, the
server's certificate checked against ca_file when there is one. As Consul, it tries the
`retry_join`/`start_join` hosts (their ports dropped, `ports.server` instead) and, once gossip
knows servers, those; a failure is logged per server (`AutoEncrypt.Sign RPC failed: addr=...
error="rpc error making call: <the server's text>"`), then `No servers successfully responded to
the auto-encrypt request`, and it tries again after 1 s, 2 s, 4 s ... (at most 10 minutes),
until it is stopped: the agent does not start without its certificate.

The answer (`{IssuedCert, ConnectCARoots, ManualCARoots, VerifyServerHostname}`) is installed in
memory (appliance/tls/context.py `install_auto`): the certificate and key serve outgoing RPC
(always TLS with auto_encrypt) and the HTTPS port; the Connect roots and the servers' CA are
trusted besides ca_file; `VerifyServerHostname` turns on the server-name check. The key never
touches the disk. `serve` then renews the certificate at a random point between 60% and 90% of
its lifetime (a new key pair, over mutual TLS with the current certificate; retried with the same
back-off while it fails) and follows the Connect roots in the replica, so a root rotation is
trusted before the leaves it signs arrive.

Server (`SignHandler`, the AUTO_ENCRYPT connection handler): reads the request and answers one
AUTO_ENCRYPT frame, `{"Reply": ...}` or `{"Error": "<Consul's text>"}`; `sign` is the Connect
CA's (appliance/http/handlers/connect_ca.py `auto_encrypt_sign`: allow_tls, the datacenter, the
token's node:write, ConnectCA.Sign). `trust_roots` keeps a server with allow_tls trusting the
Connect CA's current roots on its RPC port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from appliance.config.runtime import RuntimeConfig
from appliance.connect import ca, csr, spiffe
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.tls.context import AutoCert, auto_cert, install_auto

from .connection import dial, read_frame, split_address
from .frames import FrameError, Kind, decode_body, encode_frame

log = logging.getLogger("agent.auto_config")

DIAL_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0  # a server that does not finish the TLS close keeps nobody waiting
RETRY_MIN_S = 1.0
RETRY_MAX_S = 600.0  # Consul's auto-config waiter: at most 10 minutes between attempts
RENEW_AT = (0.6, 0.9)  # renew between 60% and 90% of the certificate's lifetime
ROOTS_POLL_S = 60.0
ALLOW_TLS_OFF = "AutoEncrypt.AllowTLS must be enabled in order to use this endpoint"
NO_SERVERS = "No servers successfully responded to the auto-encrypt request"
NO_HOSTS = "no auto-encrypt server addresses available for use"


class AutoEncryptError(Exception):
    """A refused AutoEncrypt.Sign; str() is Consul's text."""


# ------------------------------------------------------------------------------------ server


Sign = Callable[[str, str, str], Awaitable[dict[str, Any]]]  # (csr, token, datacenter) -> reply


class SignHandler:
    """Answers the AUTO_ENCRYPT request that opened a connection (module docstring)."""

    def __init__(self, sign: Sign) -> None:
        self.sign = sign

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: list[Any]) -> None:
        request = body[1] if len(body) == 2 and isinstance(body[1], dict) else {}
        fields = [request.get(k, "") for k in ("CSR", "Token", "Datacenter")]
        answer: dict[str, Any]
        if not all(isinstance(v, str) for v in fields):
            answer = {"Error": "malformed AutoEncrypt.Sign request"}
        else:
            try:
                answer = {"Reply": await self.sign(*fields)}
            except AutoEncryptError as err:
                answer = {"Error": str(err)}
        writer.write(encode_frame([Kind.AUTO_ENCRYPT, answer]))
        with contextlib.suppress(OSError):
            await writer.drain()


async def trust_roots(roots: Callable[[], str], wait: Callable[[], Awaitable[Any]],
                      *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
    """Keep the Connect CA's roots (`roots()`, PEM) trusted as they change (`wait()` returns
    after a change or a while)."""
    task_status.started()
    while True:
        pem = roots()
        if pem and auto_cert().roots != (pem,):
            install_auto(replace(auto_cert(), roots=(pem,)))
        await wait()


# ------------------------------------------------------------------------------------ client


@dataclass(frozen=True)
class Signed:
    cert_pem: str
    key_pem: str
    connect_roots: str  # PEM
    manual_roots: tuple[str, ...]
    verify_server_hostname: bool
    valid_after: float
    valid_before: float

    def auto_cert(self, connect_roots: str = "") -> AutoCert:
        roots = tuple(r for r in (connect_roots or self.connect_roots, *self.manual_roots) if r)
        return AutoCert(self.cert_pem, self.key_pem, roots, self.verify_server_hostname)


def _connect_roots_pem(body: Any) -> str:
    roots = (body or {}).get("Roots") or []
    out = []
    for root in roots:
        out.append(root.get("RootCert") or "")
        out.extend(root.get("IntermediateCerts") or ())
    return "".join(p if p.endswith("\n") else p + "\n" for p in out if p)


def parse_reply(reply: Any, key_pem: str) -> Signed:
    """The server's answer (ValueError when it is not one)."""
    if not isinstance(reply, dict) or not isinstance(reply.get("IssuedCert"), dict):
        raise ValueError("no IssuedCert in the answer")
    cert_pem = reply["IssuedCert"].get("CertPEM") or ""
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    manual = tuple(p for p in reply.get("ManualCARoots") or () if isinstance(p, str) and p)
    return Signed(cert_pem, key_pem, _connect_roots_pem(reply.get("ConnectCARoots")), manual,
                  bool(reply.get("VerifyServerHostname")), leaf.not_valid_before_utc.timestamp(),
                  leaf.not_valid_after_utc.timestamp())


def make_request(config: RuntimeConfig) -> tuple[str, str]:
    """(CSR PEM, key PEM) for this agent's SPIFFE ID (the server sets the trust domain)."""
    key = ca.generate_key("ec", 256)
    uri = spiffe.agent_uri("dummy.trustdomain", config.datacenter, config.node_name)
    dns = ("localhost", *config.tls.auto_encrypt_dns_san)
    ips = tuple(ipaddress.ip_address(i) for i in ("127.0.0.1", "::1", *config.tls.auto_encrypt_ip_san))
    return csr.make(uri, key, dns, ips), ca.key_pem(key)


async def sign_once(address: str, port: int, body: dict[str, Any], *, insecure: bool) -> dict[str, Any]:
    """One AutoEncrypt.Sign on one server (AutoEncryptError with the text to log)."""
    try:
        reader, writer = await dial(address, port, DIAL_TIMEOUT_S, insecure=insecure)
    except (OSError, TimeoutError) as err:
        reason = str(err) or type(err).__name__
        raise AutoEncryptError(f"rpc error getting client: failed to get conn: {reason}") from None
    try:
        writer.write(encode_frame([Kind.AUTO_ENCRYPT, body]))
        await writer.drain()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            answer = decode_body(await read_frame(reader))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError) as err:
        raise AutoEncryptError(f"rpc error making call: {str(err) or type(err).__name__}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)
    result = answer[1] if len(answer) == 2 and isinstance(answer[1], dict) else {}
    if result.get("Error"):
        raise AutoEncryptError(f"rpc error making call: {result['Error']}")
    if "Reply" not in result:
        raise AutoEncryptError("rpc error making call: no answer")
    reply: dict[str, Any] = result["Reply"]
    return reply


def join_hosts(config: RuntimeConfig) -> list[str]:
    """retry_join and start_join hosts, their (gossip) ports dropped for ports.server (Consul's)."""
    hosts = []
    for entry in dict.fromkeys(config.retry_join + config.start_join):
        host, _ = split_address(entry, config.ports.server)
        hosts.append(f"[{host}]:{config.ports.server}" if ":" in host else f"{host}:{config.ports.server}")
    return hosts


class AutoEncrypt:
    """A client agent's auto_encrypt certificate: fetched at start, renewed, its roots followed."""

    def __init__(self, config: Callable[[], RuntimeConfig], token: Callable[[], str],
                 servers: Callable[[], list[str]], roots: Callable[[], str],
                 wait_roots: Callable[[float], Awaitable[Any]], rng: random.Random | None = None) -> None:
        self.config = config
        self.token = token
        self.servers = servers  # servers gossip knows (RPC addresses)
        self.roots = roots  # the Connect roots in the replica (PEM; "" until it has them)
        self.wait_roots = wait_roots
        self.rng = rng or random.Random()
        self.signed: Signed | None = None
        self.renewed = 0

    def _hosts(self) -> list[str]:
        known = list(self.servers())
        self.rng.shuffle(known)
        return list(dict.fromkeys(known + join_hosts(self.config())))

    async def _attempt(self, insecure: bool) -> Signed:
        cfg = self.config()
        csr_pem, key_pem = make_request(cfg)
        body = {"CSR": csr_pem, "Token": self.token(), "Datacenter": cfg.datacenter}
        hosts = self._hosts()
        if not hosts:
            raise AutoEncryptError(NO_HOSTS)
        for address in hosts:
            log.debug("making AutoEncrypt.Sign RPC: addr=%s", address)
            try:
                reply = await sign_once(address, cfg.ports.server, body, insecure=insecure)
                return parse_reply(reply, key_pem)
            except AutoEncryptError as err:
                log.error('AutoEncrypt.Sign RPC failed: addr=%s error="%s"', address, err)
            except ValueError as err:
                log.error('AutoEncrypt.Sign RPC failed: addr=%s error="invalid answer: %s"', address, err)
        raise AutoEncryptError(NO_SERVERS)

    async def _until_signed(self, insecure: bool) -> Signed:
        delay = RETRY_MIN_S
        while True:
            try:
                return await self._attempt(insecure)
            except AutoEncryptError as err:
                log.error("%s", err)
            await asyncio.sleep(delay * self.rng.uniform(0.75, 1.0))
            delay = min(delay * 2, RETRY_MAX_S)

    def _install(self, signed: Signed) -> None:
        self.signed = signed
        install_auto(signed.auto_cert(self.roots()))

    async def initial(self) -> None:
        """The first certificate, over a connection without a client certificate; retried until
        a server signs it (the agent's start waits here)."""
        self._install(await self._until_signed(insecure=True))
        log.info("automatically upgraded to TLS")

    def renew_in(self, now: float) -> float:
        """Seconds until the next renewal: a random point between 60% and 90% of the lifetime."""
        assert self.signed is not None
        life = self.signed.valid_before - self.signed.valid_after
        at = self.signed.valid_after + life * self.rng.uniform(*RENEW_AT)
        return max(0.0, at - now)

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Renew before expiry and follow root rotations (module docstring), until cancelled."""
        task_status.started()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._renewals())
            tasks.create_task(self._follow_roots())

    async def _renewals(self) -> None:
        while True:
            await asyncio.sleep(self.renew_in(datetime.datetime.now(datetime.UTC).timestamp()))
            self._install(await self._until_signed(insecure=False))
            self.renewed += 1
            log.info("auto_encrypt: certificate renewed: expires=%s",
                     datetime.datetime.fromtimestamp(self.signed.valid_before if self.signed else 0, datetime.UTC)
                     .strftime("%Y-%m-%dT%H:%M:%SZ"))

    async def _follow_roots(self) -> None:
        installed = ""
        while True:
            pem = self.roots()
            if pem and pem != installed and self.signed is not None:
                install_auto(self.signed.auto_cert(pem))
                installed = pem
            await self.wait_roots(ROOTS_POLL_S)
