"""The default-deny matrix, generated from the route table: with `default_policy = "deny"`, for
every route, the anonymous token is refused or gets a filtered answer; a token holding exactly
the permission the request needs succeeds; one level lower (read for write, deny for read) or a
neighbouring name or prefix is refused. A new route is covered as soon as it is in ROUTES: its
sample request is derived from its `acl` column unless SAMPLES says more (a body, an ID that
must exist, the segment a body names).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.http.routes import ROUTES, Route
from sd.http import ROUTES as SD_ROUTES
from tests.unit.http_inprocess import InProcessAgent, http_agent

ALL_ROUTES = (*ROUTES, *SD_ROUTES)  # the agent's table and what the extensions mount

ROOT = "matrix-root"
HCL = f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{ROOT}" }} }}'
SCALARS = {"acl", "keyring", "operator", "mesh", "peering"}
Need = tuple[str, str, str]  # resource, level, segment


@dataclass
class Sample:
    """One request for a route: the path after its prefix (or the whole target), the body, and
    the permissions it needs (None: the route's own on the path parameter)."""

    tail: str | Callable[[dict[str, str]], str] = "x"
    body: Any = b""
    needs: list[Need] | None = None
    fixtures: dict[str, str] = field(default_factory=dict)


COORD = {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5}
SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/v1/agent/service/"): Sample("web1", needs=[("service", "read", "web")]),
    ("GET", "/v1/agent/health/service/id/"): Sample("web1", needs=[("service", "read", "web")]),
    ("GET", "/v1/agent/health/service/name/"): Sample("web"),
    ("PUT", "/v1/agent/service/register"): Sample("", {"Name": "web", "ID": "web2"},
                                                  [("service", "write", "web")]),
    ("PUT", "/v1/agent/service/deregister/"): Sample("web1", needs=[("service", "write", "web")]),
    ("PUT", "/v1/agent/service/maintenance/"): Sample("web1?enable=true", needs=[("service", "write", "web")]),
    ("PUT", "/v1/agent/check/register"): Sample("", {"Name": "c2", "ID": "c2", "TTL": "10s"},
                                                [("node", "write", "n1")]),
    ("PUT", "/v1/agent/maintenance"): Sample("?enable=true", needs=[("node", "write", "n1")]),
    ("PUT", "/v1/catalog/register"): Sample("", {"Node": "n9", "Address": "10.0.0.9",
                                                 "Service": {"Service": "db", "ID": "db1"}},
                                            [("node", "write", "n9"), ("service", "write", "db")]),
    ("PUT", "/v1/catalog/deregister"): Sample("", {"Node": "n9"}, [("node", "write", "n9")]),
    ("GET", "/v1/kv/"): Sample("k1"),
    ("PUT", "/v1/kv/"): Sample("k1", b"v"),
    ("DELETE", "/v1/kv/"): Sample("k1"),
    ("PUT", "/v1/session/create"): Sample("", {"Node": "n1", "Checks": []}, [("session", "write", "n1")]),
    ("PUT", "/v1/session/destroy/"): Sample(lambda f: f["session"], needs=[("session", "write", "n1")]),
    ("PUT", "/v1/session/renew/"): Sample(lambda f: f["session"], needs=[("session", "write", "n1")]),
    ("GET", "/v1/session/info/"): Sample(lambda f: f["session"]),
    ("GET", "/v1/session/node/"): Sample("n1"),
    ("PUT", "/v1/txn"): Sample("", [{"KV": {"Verb": "set", "Key": "k1", "Value": "MQ=="}}],
                               [("key", "write", "k1")]),
    ("POST", "/v1/query"): Sample("", {"Name": "q2", "Service": {"Service": "web"}}, [("query", "write", "q2")]),
    ("GET", "/v1/query/"): Sample(lambda f: f["query"], needs=[("query", "read", "q1")]),
    ("PUT", "/v1/query/"): Sample(lambda f: f["query"], {"Name": "q1", "Service": {"Service": "web"}},
                                  [("query", "write", "q1")]),
    ("DELETE", "/v1/query/"): Sample(lambda f: f["query"], needs=[("query", "write", "q1")]),
    ("PUT", "/v1/event/fire/"): Sample("e1"),
    ("PUT", "/v1/coordinate/update"): Sample("", {"Node": "n1", "Segment": "", "Coord": COORD},
                                             [("node", "write", "n1")]),
    ("PUT", "/v1/agent/token/"): Sample("replication", {"Token": "r"}),  # not `default`: that would let anyone in
    ("PUT", "/v1/agent/join/"): Sample("127.0.0.1"),
}
# Connect: config entries take the permission of their kind; intentions `intentions` on the destination
SAMPLES.update({
    ("GET", "/v1/config/"): Sample("service-defaults/web", needs=[("service", "read", "web")]),
    ("PUT", "/v1/config"): Sample("", {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
                                  [("service", "write", "web")]),
    ("DELETE", "/v1/config/"): Sample("service-defaults/web", needs=[("service", "write", "web")]),
    ("POST", "/v1/connect/intentions"): Sample("", {"SourceName": "api", "DestinationName": "db", "Action": "allow"},
                                               [("intention", "write", "db")]),
    ("GET", "/v1/connect/intentions/exact"): Sample("?source=web&destination=db", needs=[("intention", "read", "db")]),
    ("PUT", "/v1/connect/intentions/exact"): Sample("?source=web&destination=db", {"Action": "deny"},
                                                    [("intention", "write", "db")]),
    ("DELETE", "/v1/connect/intentions/exact"): Sample("?source=web&destination=db",
                                                       needs=[("intention", "write", "db")]),
    ("GET", "/v1/connect/intentions/check"): Sample("?source=web&destination=db",
                                                    needs=[("intention", "read", "db")]),
    ("GET", "/v1/connect/intentions/match"): Sample("?by=destination&name=db"),
    ("GET", "/v1/connect/intentions/"): Sample(lambda f: f["intention"], needs=[("intention", "read", "db")]),
    ("PUT", "/v1/connect/intentions/"): Sample(lambda f: f["intention"], {
        "SourceName": "web", "DestinationName": "db", "Action": "deny"}, [("intention", "write", "db")]),
    ("DELETE", "/v1/connect/intentions/"): Sample(lambda f: f["intention"], needs=[("intention", "write", "db")]),
    **{(method, "/v1/agent/connect/authorize"): Sample("", {
        "Target": "db", "ClientCertURI": "spiffe://x.consul/ns/default/dc/dc1/svc/web"}, [("service", "write", "db")])
       for method in ("POST", "PUT")},
})
for _verb in ("deregister", "pass", "warn", "fail", "update"):
    SAMPLES[("PUT", f"/v1/agent/check/{_verb}/")] = Sample("chk", needs=[("node", "write", "n1")])


def rule(resource: str, segment: str, level: str, prefix: bool = False) -> str:
    """One rule; an intention permission is the `intentions` attribute of a service rule."""
    kind = "_prefix" if prefix else ""
    if resource == "intention":
        return f'service{kind} "{segment}" {{ policy = "deny" intentions = "{level}" }}'
    return f'{resource}{kind} "{segment}" {{ policy = "{level}" }}'


def rules(needs: list[Need]) -> str:
    out = []
    for resource, level, segment in needs:
        if resource == "intention":
            out.append(rule(resource, segment, level))
        elif resource in SCALARS:
            out.append(f'{resource} = "{level}"')
        else:
            out.append(f'{resource} "{segment}" {{ policy = "{level}" }}')
    return "\n".join(out)


def lower(needs: list[Need]) -> list[Need]:
    return [(r, "read" if lvl == "write" else "deny", s) for r, lvl, s in needs]


def neighbours(needs: list[Need]) -> list[list[Need]]:
    """Same levels on a neighbouring name, and on a prefix that does not cover the segment."""
    named = [n for n in needs if n[0] not in SCALARS]
    if not named:
        return []
    return [[(r, lvl, s + "-other") if r not in SCALARS else (r, lvl, s) for r, lvl, s in needs]]


class Matrix:
    def __init__(self, api: InProcessAgent) -> None:
        self.api = api
        self.count = 0
        self.fixtures: dict[str, str] = {}

    async def token(self, text: str) -> dict[str, str]:
        self.count += 1
        pid = f"{self.count:08x}-0000-4000-8000-000000000000"
        await self.api.ctx.consensus.propose({"Type": "acl", "Op": "policy_set", "Object": {
            "ID": pid, "Name": f"p{self.count}", "Description": "", "Rules": text}})
        secret = f"s-{self.count}"
        await self.api.ctx.consensus.propose({"Type": "acl", "Op": "token_set", "Create": True, "Object": {
            "AccessorID": f"{self.count:08x}-0000-4000-8000-00000000000a", "SecretID": secret, "Description": "",
            "Local": False, "CreateTime": "2024-01-01T00:00:00Z", "Policies": [{"ID": pid}]}})
        return {"X-Consul-Token": secret}

    async def setup(self) -> None:
        """What the samples refer to, made again before each route (a route may delete it)."""
        root = {"X-Consul-Token": ROOT}
        call = self.api.call
        await call("PUT", "/v1/agent/service/register", {"Name": "web", "ID": "web1", "Port": 80}, headers=root)
        await call("PUT", "/v1/agent/check/register", {"Name": "chk", "ID": "chk", "TTL": "10m"}, headers=root)
        await call("PUT", "/v1/kv/k1", b"1", headers=root)
        sess = await call("PUT", "/v1/session/create", {"Node": "n1", "Checks": []}, headers=root)
        self.fixtures["session"] = json.loads(sess.body)["ID"]
        if "query" not in self.fixtures or self.fixtures["query"] not in self.api.ctx.store.prepared_queries:
            q = await call("POST", "/v1/query", {"Name": "q1", "Service": {"Service": "web"}}, headers=root)
            self.fixtures["query"] = json.loads(q.body)["ID"]
        await call("PUT", "/v1/event/fire/e0", b"", headers=root)
        await call("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web"}, headers=root)
        found = await call("GET", "/v1/connect/intentions/exact?source=web&destination=db", headers=root)
        if found.status == 200 and json.loads(found.body).get("ID"):
            self.fixtures["intention"] = json.loads(found.body)["ID"]
        else:
            await call("DELETE", "/v1/connect/intentions/exact?source=web&destination=db", headers=root)
            made = await call("POST", "/v1/connect/intentions", {"SourceName": "web", "DestinationName": "db",
                                                                 "Action": "allow"}, headers=root)
            self.fixtures["intention"] = json.loads(made.body)["ID"]

    def target(self, route: Route, sample: Sample) -> str:
        tail = sample.tail(self.fixtures) if callable(sample.tail) else sample.tail
        return route.path + tail

    async def call(self, route: Route, sample: Sample, headers: dict[str, str]) -> Any:
        body = sample.body if isinstance(sample.body, bytes) else json.dumps(sample.body).encode()
        return await self.api.call(route.method, self.target(route, sample), body, headers=headers)


def default_needs(route: Route, sample: Sample) -> list[Need]:
    resource, _, level = route.acl.partition(":")
    if resource in SCALARS:
        return [(resource, level, "")]
    if resource == "agent":
        return [(resource, level, "n1")]
    tail = sample.tail if isinstance(sample.tail, str) else ""
    return [(resource, level, tail.split("?")[0])]


def refused(answer: Any) -> bool:
    """403 Permission denied; a transaction reports each refused operation in a 409 instead."""
    if answer.status == 409:
        errors = (payload(answer) or {}).get("Errors") or []
        return bool(errors) and all(e.get("What") == "Permission denied" for e in errors)
    return answer.status == 403 and answer.body.startswith(b"Permission denied")


def payload(answer: Any) -> Any:
    try:
        return json.loads(answer.body or b"null")
    except ValueError:
        return answer.body


async def check_route(m: Matrix, route: Route, problems: list[str]) -> None:
    sample = SAMPLES.get((route.method, route.path), Sample("x" if route.prefix else ""))
    name = f"{route.method} {route.path}"
    await m.setup()
    if route.acl == "none":
        return
    if route.acl.startswith("filter:") and (route.method, route.path) not in {("PUT", "/v1/txn")}:
        resources = route.acl.removeprefix("filter:").split(",")
        full = payload(await m.call(route, sample, {"X-Consul-Token": ROOT}))
        anon = await m.call(route, sample, {})
        if anon.status == 200 and full and payload(anon) == full:
            problems.append(f"{name}: anonymous saw the unfiltered answer")
        if anon.status not in (200, 404) and not refused(anon):
            problems.append(f"{name}: anonymous got {anon.status} {anon.body[:80]!r}")
        exact = await m.token("\n".join(rule(r, "", "read", prefix=True) for r in resources))
        got = await m.call(route, sample, exact)
        if refused(got) or (got.status == 200 and payload(got) != full):
            problems.append(f"{name}: read on {resources} did not see everything ({got.status})")
        other = await m.token("\n".join(rule(r, "zzz", "read") for r in resources))
        got = await m.call(route, sample, other)
        if got.status == 200 and full and payload(got) == full:
            problems.append(f"{name}: a neighbouring name saw the unfiltered answer")
        return
    needs = sample.needs if sample.needs is not None else default_needs(route, sample)
    anon = await m.call(route, sample, {})
    if not refused(anon):
        problems.append(f"{name}: anonymous got {anon.status} {anon.body[:80]!r}")
    await m.setup()
    got = await m.call(route, sample, await m.token(rules(needs)))
    if refused(got):
        problems.append(f"{name}: exactly {needs} was refused: {got.body[:120]!r}")
    for weaker in [lower(needs), *neighbours(needs)]:
        await m.setup()
        got = await m.call(route, sample, await m.token(rules(weaker)))
        if not refused(got):
            problems.append(f"{name}: {weaker} was let through ({got.status})")


def test_default_deny_matrix() -> None:
    async def go() -> list[str]:
        problems: list[str] = []
        async with http_agent("-hcl", HCL) as api:
            api.router.add_all(SD_ROUTES)
            m = Matrix(api)
            for route in ALL_ROUTES:
                await check_route(m, route, problems)
        return problems

    problems = asyncio.run(go())
    assert not problems, "\n".join(problems)


def test_every_sample_names_a_route() -> None:
    keys = {(r.method, r.path) for r in ALL_ROUTES}
    assert not [k for k in SAMPLES if k not in keys]
