"""The peer for bench/http: a bare aiohttp handler that returns fixed bytes with fixed headers.

Usage: python bare_server.py PORT BODY_FILE HEADERS_JSON
"""

import json
import sys

from aiohttp import web


def main() -> None:
    port, body_file, headers_json = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(body_file, "rb") as fh:
        body = fh.read()
    headers = json.loads(headers_json)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
