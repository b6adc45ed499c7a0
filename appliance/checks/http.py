"""HTTP checks: one request per run with aiohttp; the status code decides the status.

How it works
------------
`HTTPChecker` owns one aiohttp client session for all HTTP checks of the agent. Its connector
closes every connection after use (Consul's HTTP checks disable keep-alives) and keeps no
cookies. Each run sends `Method` (default GET) to the URL with the check's headers (a map of
lists), adding `User-Agent: Consul Health Check` and `Accept: text/plain, text/*, */*` unless
the check sets them; a `Host` header is honoured. `Body` is sent as is. Redirects are followed
(at most 10) unless `disable_redirects`. For https URLs `tls_skip_verify` turns certificate
checks off and `tls_server_name` sets the name used for SNI and verification.

At most 4 KiB of the response body is read; the output is
`HTTP GET <url>: 200 OK Output: <body>`. 2xx is passing, 429 warning, anything else critical.
A request that fails is critical with Go's error text
(`Get "<url>": dial tcp 127.0.0.1:80: connect: connection refused`). The whole request, body
read included, must finish within the check's timeout (default 10s).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import aiohttp

from appliance.checks.rules import (
    CRITICAL,
    HTTP_BODY_MAX,
    dial_error,
    http_error_output,
    http_output,
    http_status,
)
from appliance.local.definitions import CheckDefinition

DEFAULT_HEADERS = (("User-Agent", "Consul Health Check"), ("Accept", "text/plain, text/*, */*"))
MAX_REDIRECTS = 10


def request_headers(header: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The check's headers (repeated names kept) plus Consul's defaults for those it lacks."""
    out = [(name, value) for name, values in header.items() for value in values]
    have = {name.lower() for name in header}
    out += [(name, value) for name, value in DEFAULT_HEADERS if name.lower() not in have]
    return out


def _error_reason(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(err, aiohttp.TooManyRedirects):
        return f"stopped after {MAX_REDIRECTS} redirects"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: {err.certificate_error}"
    if isinstance(err, aiohttp.ClientConnectorError):
        addr = f"{err.host}:{err.port}" if ":" not in err.host else f"[{err.host}]:{err.port}"
        dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
        if dns_error is not None and isinstance(err, dns_error):
            return dial_error("tcp", addr, lookup_failed=True, host=err.host)
        return dial_error("tcp", addr, err.os_error.errno, str(err.os_error.strerror or err))
    non_http = getattr(aiohttp, "NonHttpUrlClientError", ())
    if isinstance(err, (aiohttp.InvalidURL, non_http)):
        scheme = urlsplit(str(err.args[0] if err.args else "")).scheme.lower()
        if scheme not in ("http", "https"):  # Go's net/http: a file:// or gopher:// URL
            return f'unsupported protocol scheme "{scheme}"'
        return f"invalid URL: {err}"
    return str(err) or type(err).__name__


class HTTPChecker:
    """Runs HTTP checks over one shared client session (created on first use)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[bool, ssl.SSLContext] = {}

    def _session_for_run(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=10)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _ssl_context(self, skip_verify: bool) -> ssl.SSLContext:
        ctx = self._ssl.get(skip_verify)
        if ctx is None:
            ctx = ssl.create_default_context()
            if skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl[skip_verify] = ctx
        return ctx

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def run(self, check: CheckDefinition) -> tuple[str, str]:
        """One request; returns (status, output)."""
        method = (check.method or "GET").upper()
        url = check.http
        kwargs: dict = {
            "headers": request_headers(check.header),
            "allow_redirects": not check.disable_redirects,
            "max_redirects": MAX_REDIRECTS,
            "timeout": aiohttp.ClientTimeout(total=check.timeout_s or 10.0),
        }
        if check.body:
            kwargs["data"] = check.body.encode()
        if url.lower().startswith("https:"):
            kwargs["ssl"] = self._ssl_context(check.tls_skip_verify)
            if check.tls_server_name:
                kwargs["server_hostname"] = check.tls_server_name
        session = self._session_for_run()
        try:
            async with session.request(method, url, **kwargs) as resp:
                body = bytearray()
                while len(body) < HTTP_BODY_MAX:
                    chunk = await resp.content.read(HTTP_BODY_MAX - len(body))
                    if not chunk:
                        break
                    body += chunk
                return http_status(resp.status), http_output(method, url, resp.status, resp.reason or "",
                                                             bytes(body))
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as err:
            return CRITICAL, http_error_output(method, url, _error_reason(err, check.timeout_s))
