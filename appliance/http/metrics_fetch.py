"""The metrics proxy's outgoing request (appliance/http/handlers/ui_proxy.py decides what may be
fetched; this module fetches it): one GET with the configured headers only, no redirects
followed, connect and total timeouts, at most MAX_BODY bytes read. Handlers import no aiohttp, so
the client lives here."""

from __future__ import annotations

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=5)
MAX_BODY = 8 << 20  # bytes read from Prometheus for one answer


class Unreachable(Exception):
    """The backend did not answer (`timed_out`: within the timeout)."""

    def __init__(self, detail: str, timed_out: bool) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


async def fetch(url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """(status, content type without parameters, body) of GET url."""
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, \
                session.get(url, headers=headers, allow_redirects=False) as resp:
            body = await resp.content.read(MAX_BODY)
            return resp.status, resp.headers.get("Content-Type", "application/json").split(";")[0], body
    except TimeoutError:
        raise Unreachable("timed out", True) from None
    except (aiohttp.ClientError, OSError) as err:
        raise Unreachable(type(err).__name__, False) from None
