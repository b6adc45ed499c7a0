"""Cluster peering as a Consul with no peers answers it (cairn has no peering): `GET
/v1/peerings` is `[]`, `GET /v1/peering/<name>` is Consul's 404 `Peering not found for "<name>"`
and `DELETE /v1/peering/<name>` succeeds with nothing to delete, as Consul's delete of an absent
peering does. `?peer=<name>` on catalog and health reads names a peer that has imported nothing,
so they answer empty (`peered` below).
"""

from __future__ import annotations

from appliance.http.context import HTTPContext
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.values import Answer, Request, json_answer

PREFIX = "/v1/peering/"


def peered(req: Request) -> bool:
    """Whether a catalog or health read asks for the data imported from a peer (there is none)."""
    return bool(req.query_string) and bool(req.query.get("peer"))


async def peerings(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, [])


async def read(req: Request, ctx: HTTPContext) -> Answer:
    name = path_tail(req, PREFIX)
    if not name:
        raise HTTPError(400, "Must specify a name to fetch.")
    raise HTTPError(404, f'Peering not found for "{name}"')


async def delete(req: Request, ctx: HTTPContext) -> Answer:
    if not path_tail(req, PREFIX):
        raise HTTPError(400, "Must specify a name to delete.")
    return Answer()
