"""A small synchronous HTTP client for the CLI verbs (standard library only).

Where it connects, in order: the ``-http-addr`` flag, ``CAIRN_HTTP_ADDR``, ``CONSUL_HTTP_ADDR``,
then ``127.0.0.1:8500``. An address is ``host:port``, ``http://host:port`` or
``https://host:port``; a bare ``host:port`` uses https when ``CAIRN_HTTP_SSL`` or
``CONSUL_HTTP_SSL`` is true. The ACL token comes from ``-token``, ``-token-file``,
``CAIRN_HTTP_TOKEN``/``CONSUL_HTTP_TOKEN``, then ``CAIRN_HTTP_TOKEN_FILE``/
``CONSUL_HTTP_TOKEN_FILE`` and is sent as ``X-Consul-Token``. ``-datacenter`` and ``-stale``
are added to catalog and KV requests (``dc=``, ``stale=``).

HTTPS (docs/tls.md): ``-ca-file``/``CONSUL_CACERT`` and ``-ca-path``/``CONSUL_CAPATH`` name the
CAs that verify the agent's certificate (default: the system's), ``-client-cert``/
``CONSUL_CLIENT_CERT`` and ``-client-key``/``CONSUL_CLIENT_KEY`` the certificate presented when
the agent has ``tls.https.verify_incoming``, ``-tls-server-name``/``CONSUL_TLS_SERVER_NAME`` the
name sent (SNI) and checked instead of the address's host; ``CONSUL_HTTP_SSL_VERIFY=false``
skips verification. Each ``CONSUL_`` variable has a ``CAIRN_`` spelling that wins.

Failures are the two errors Consul's tools print, so scripts that grep them keep working:
``Error connecting to Consul agent: <reason>`` when nothing answers, and
``Unexpected response code: <code> (<body>)`` for an HTTP error status.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import ipaddress
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.cli.flags import ApiError, CliParser, ConnectError, UsageError
from appliance.cli.format import parse_go_bool

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"
REQUEST_TIMEOUT_S = 60.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

ADDR_ENV = ("CAIRN_HTTP_ADDR", "CONSUL_HTTP_ADDR")
TOKEN_ENV = ("CAIRN_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")
TOKEN_FILE_ENV = ("CAIRN_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE")
SSL_ENV = ("CAIRN_HTTP_SSL", "CONSUL_HTTP_SSL")
SSL_VERIFY_ENV = ("CAIRN_HTTP_SSL_VERIFY", "CONSUL_HTTP_SSL_VERIFY")
# HTTPConfig field -> (flag dest, environment variables)
TLS_SOURCES = {
    "ca_file": ("ca_file", ("CAIRN_CACERT", "CONSUL_CACERT")),
    "ca_path": ("ca_path", ("CAIRN_CAPATH", "CONSUL_CAPATH")),
    "client_cert": ("client_cert", ("CAIRN_CLIENT_CERT", "CONSUL_CLIENT_CERT")),
    "client_key": ("client_key", ("CAIRN_CLIENT_KEY", "CONSUL_CLIENT_KEY")),
    "tls_server_name": ("tls_server_name", ("CAIRN_TLS_SERVER_NAME", "CONSUL_TLS_SERVER_NAME")),
}
TLS_FLAGS = (
    ("ca-file", "CA certificate (PEM) that signs the agent's HTTPS certificate; default: the system's CAs. "
                "Also CONSUL_CACERT."),
    ("ca-path", "Directory of CA certificates, instead of -ca-file. Also CONSUL_CAPATH."),
    ("client-cert", "Certificate (PEM) to present to an agent with tls.https.verify_incoming. "
                    "Also CONSUL_CLIENT_CERT."),
    ("client-key", "Private key of -client-cert. Also CONSUL_CLIENT_KEY."),
    ("tls-server-name", "Name to send (SNI) and to check the agent's certificate against, instead of the "
                        "address's host. Also CONSUL_TLS_SERVER_NAME."),
)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        if not self.body.strip():
            return None
        return json.loads(self.body)


@dataclass(frozen=True)
class HTTPConfig:
    base_url: str  # scheme://host:port, no trailing slash
    token: str = ""
    datacenter: str = ""
    stale: bool = False
    verify_tls: bool = True
    ca_file: str = ""
    ca_path: str = ""
    client_cert: str = ""
    client_key: str = ""
    tls_server_name: str = ""


# ------------------------------------------------------------------------------------------
# flags and environment


def add_http_flags(parser: CliParser, *, server: bool = True) -> None:
    """The common HTTP API flags; ``server`` adds ``-datacenter`` and ``-stale``."""
    group = parser.add_argument_group("HTTP API Options")
    group.add_argument(
        "-http-addr", "--http-addr", dest="http_addr", default=None, metavar="<address>",
        help="Address of the agent's HTTP API: host:port or http(s)://host:port. "
        "Also CAIRN_HTTP_ADDR or CONSUL_HTTP_ADDR. Default 127.0.0.1:8500.",
    )  # fmt: skip
    group.add_argument(
        "-token", "--token", dest="token", default=None, metavar="<value>",
        help="ACL token for the request. Also CAIRN_HTTP_TOKEN or CONSUL_HTTP_TOKEN.",
    )  # fmt: skip
    group.add_argument(
        "-token-file", "--token-file", dest="token_file", default=None, metavar="<value>",
        help="File holding the ACL token. Also CAIRN_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN_FILE.",
    )  # fmt: skip
    for name, text in TLS_FLAGS:
        group.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), default=None, metavar="<value>",
                           help=text)
    if server:
        group.add_argument(
            "-datacenter", "--datacenter", dest="datacenter", default="", metavar="<value>",
            help="Datacenter to query. Defaults to the agent's datacenter.",
        )  # fmt: skip
        group.add_argument(
            "-stale", "--stale", dest="stale", action="store_true",
            help="Let any server answer, not only the leader (reads may be stale).",
        )  # fmt: skip


def _first_env(env: Mapping[str, str], names: Sequence[str]) -> str:
    for name in names:
        value = env.get(name, "")
        if value:
            return value
    return ""


def _env_bool(env: Mapping[str, str], names: Sequence[str], default: bool) -> bool:
    raw = _first_env(env, names)
    if not raw:
        return default
    try:
        return parse_go_bool(raw)
    except ValueError:
        return default


def normalize_address(addr: str, *, https: bool = False) -> str:
    """``host:port`` / ``http://host:port`` -> ``scheme://host:port`` (no trailing slash)."""
    addr = addr.strip()
    if addr.startswith("unix://"):
        raise UsageError("Error: unix:// agent addresses are not supported by cairn")
    if "://" in addr:
        scheme, _, rest = addr.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"Error: unknown protocol scheme {scheme!r} in address {addr!r}")
    else:
        scheme, rest = ("https" if https else "http"), addr
    rest = rest.rstrip("/")
    if not rest:
        raise UsageError(f"Error: invalid agent address {addr!r}")
    return f"{scheme}://{rest}"


def resolve_address(flag: str | None, env: Mapping[str, str]) -> str:
    raw = flag or _first_env(env, ADDR_ENV) or DEFAULT_HTTP_ADDR
    return normalize_address(raw, https=_env_bool(env, SSL_ENV, False))


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise UsageError(f"Error loading token file: {exc.strerror or exc}") from None


def resolve_token(flag: str | None, token_file: str | None, env: Mapping[str, str]) -> str:
    if flag:
        return flag
    if token_file:
        return _read_token_file(token_file)
    value = _first_env(env, TOKEN_ENV)
    if value:
        return value
    path = _first_env(env, TOKEN_FILE_ENV)
    if path:
        return _read_token_file(path)
    return ""


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> HTTPConfig:
    env = os.environ if env is None else env
    return HTTPConfig(
        base_url=resolve_address(getattr(args, "http_addr", None), env),
        token=resolve_token(getattr(args, "token", None), getattr(args, "token_file", None), env),
        datacenter=getattr(args, "datacenter", "") or "",
        stale=bool(getattr(args, "stale", False)),
        verify_tls=_env_bool(env, SSL_VERIFY_ENV, True),
        **{key: getattr(args, dest, None) or _first_env(env, names) for key, (dest, names) in TLS_SOURCES.items()},
    )


def client_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> HTTPClient:
    return HTTPClient(config_from_args(args, env))


# ------------------------------------------------------------------------------------------
# the client


Params = Sequence[tuple[str, str]] | Mapping[str, str] | None


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    """A short, Go-like reason for a connection failure."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if isinstance(exc, str):
            return exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "i/o timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):  # Go: "tls: failed to verify certificate: x509: ..."
        return f"tls: failed to verify certificate: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "EOF"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def tls_context(config: HTTPConfig) -> ssl.SSLContext:
    """The client side of HTTPS: the CAs, the client certificate, verification on or off."""
    try:
        ctx = ssl.create_default_context(cafile=config.ca_file or None, capath=config.ca_path or None)
        if config.client_cert or config.client_key:
            ctx.load_cert_chain(config.client_cert, config.client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"Error loading TLS files: {exc.strerror or exc}") from None
    if not config.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that sends and checks `server_name` (-tls-server-name) instead of the URL's host."""

    def __init__(self, *args: Any, server_name: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_name = server_name

    def connect(self) -> None:
        if not self.server_name:
            return super().connect()
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(context=context)
        self.server_name = server_name

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_NamedHTTPSConnection, server_name=self.server_name),
                            req, context=self._context)  # type: ignore[attr-defined]


class HTTPClient:
    """One agent's HTTP API; each call is one request."""

    def __init__(self, config: HTTPConfig) -> None:
        self.config = config
        host = urllib.parse.urlsplit(config.base_url).hostname or ""
        handlers: list[urllib.request.BaseHandler] = []
        if _is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))
        if config.base_url.startswith("https://"):
            handlers.append(_HTTPSHandler(tls_context(config), config.tls_server_name))
        self._opener = urllib.request.build_opener(*handlers)

    # -- building requests ----------------------------------------------------------------

    def url(self, path: str, params: Params = None, *, server: bool = False, method: str = "GET") -> str:
        query: list[tuple[str, str]] = list(params.items() if isinstance(params, Mapping) else (params or []))
        if server:
            if self.config.datacenter:
                query.append(("dc", self.config.datacenter))
            if self.config.stale and method == "GET":
                query.append(("stale", ""))
        url = self.config.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return url

    def _request(
        self,
        method: str,
        path: str,
        params: Params,
        body: bytes | None,
        server: bool,
        timeout: float | None,
        content_type: str = "application/octet-stream",
    ) -> http.client.HTTPResponse:
        url = self.url(path, params, server=server, method=method)
        headers = {"User-Agent": "cairn-cli"}
        if self.config.token:
            headers["X-Consul-Token"] = self.config.token
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - http(s) only, self.url
        if method in ("PUT", "POST") and body is None:
            req.data = b""
        try:
            return self._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    text = exc.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    text = ""
            raise ApiError(exc.code, text.strip()) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise ConnectError(f'{method.capitalize()} "{url}": {_reason(exc)}') from None

    def request(
        self,
        method: str,
        path: str,
        params: Params = None,
        body: bytes | None = None,
        *,
        server: bool = False,
        allow_404: bool = False,
        timeout: float | None = REQUEST_TIMEOUT_S,
        content_type: str = "application/octet-stream",
    ) -> Response:
        """Send one request; raise ApiError for a non-2xx status (but return 404s when asked)."""
        try:
            resp = self._request(method, path, params, body, server, timeout, content_type)
        except ApiError as exc:
            if allow_404 and exc.code == 404:
                return Response(404, {}, exc.body.encode())
            raise
        with resp:
            try:
                data = resp.read(MAX_RESPONSE_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectError(f'{method.capitalize()} "{resp.url}": {_reason(exc)}') from None
            return Response(resp.status, dict(resp.headers.items()), data)

    def get(self, path: str, params: Params = None, **kw: Any) -> Response:
        return self.request("GET", path, params, **kw)

    def put(self, path: str, params: Params = None, body: bytes | None = None, **kw: Any) -> Response:
        return self.request("PUT", path, params, body, **kw)

    def delete(self, path: str, params: Params = None, **kw: Any) -> Response:
        return self.request("DELETE", path, params, **kw)

    def get_json(self, path: str, params: Params = None, **kw: Any) -> Any:
        resp = self.get(path, params, **kw)
        try:
            return resp.json()
        except ValueError:
            raise ApiError(resp.status, "invalid JSON in response") from None

    def stream_lines(self, path: str, params: Params = None) -> Iterator[bytes]:
        """GET a streaming endpoint and yield its lines as they arrive (no read timeout)."""
        resp = self._request("GET", path, params, None, False, None)
        with resp:
            while True:
                try:
                    line = resp.readline(1024 * 1024)
                except (OSError, http.client.HTTPException):
                    return
                if not line:
                    return
                yield line


def quote_path(segment: str) -> str:
    """Escape a path parameter (a KV key keeps its slashes)."""
    return urllib.parse.quote(segment, safe="/")
