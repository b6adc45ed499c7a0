"""The route table (appliance/http/routes.py): complete, well-formed, and rendered as OpenAPI 3."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from appliance.http.openapi import openapi
from appliance.http.routes import ACL, ROUTES, Route, check_table
from appliance.http.routing import Router
from sd.http import ROUTES as SD_ROUTES

ROOT = Path(__file__).resolve().parents[2]
ALL = (*ROUTES, *SD_ROUTES)
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_the_table_is_well_formed():
    assert check_table(ALL) == []
    assert all(isinstance(r, Route) for r in ALL)


def test_every_acl_is_one_of_the_forms_of_security_md():
    # security.md §3.3: "<resource>:<read|write>", "filter:<resource>", or none
    for r in ALL:
        assert ACL.fullmatch(r.acl), (r.method, r.path, r.acl)
    by = {(r.method, r.path): r.acl for r in ALL}
    assert by["GET", "/v1/kv/"] == "key:read"
    assert by["PUT", "/v1/kv/"] == "key:write"
    assert by["PUT", "/v1/agent/service/register"] == "service:write"
    assert by["GET", "/v1/operator/raft/configuration"] == "operator:read"
    assert by["GET", "/v1/status/leader"] == "none"
    assert by["GET", "/v1/health/service/"] == "filter:node,service"


def test_check_table_finds_duplicates_and_bad_acls():
    async def h(req, ctx):  # pragma: no cover - never called
        raise AssertionError

    bad = [Route("GET", "/v1/x", h, "none"), Route("GET", "/v1/x", h, "none"), Route("PUT", "/v1/y", h, "key:maybe")]
    problems = check_table(bad)
    assert any("declared twice" in p for p in problems) and any("key:maybe" in p for p in problems)


def test_no_handler_module_imports_aiohttp():
    for path in (ROOT / "appliance/http/handlers").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "aiohttp" for name in names), path


def test_no_handler_reaches_for_the_agent():
    shipped = [*(ROOT / "appliance/http").rglob("*.py"), *(ROOT / "sd").glob("*.py"),
               *(ROOT / "exporters").glob("*.py")]
    for path in shipped:
        text = path.read_text()
        assert 'app["agent"]' not in text, path


def test_filter_schemas_exist():
    from appliance.filter import ENDPOINTS

    assert {r.filter for r in ALL if r.filter} <= set(ENDPOINTS)


def test_the_router_knows_every_route():
    router = Router(ALL)
    for r in ALL:
        found = router.resolve(r.path + ("x" if r.prefix else ""))
        assert found is not None and found[1][r.method] is r


# -- OpenAPI ----------------------------------------------------------------------------------------


def _valid_openapi_3(doc: dict) -> list[str]:
    """The OpenAPI 3.0 rules this document can break (spec: openapi 3.0.3, Paths, Operation, Parameter)."""
    problems = []
    if not re.fullmatch(r"3\.0\.\d+", doc.get("openapi", "")):
        problems.append("openapi version")
    info = doc.get("info", {})
    if not isinstance(info.get("title"), str) or not isinstance(info.get("version"), str):
        problems.append("info.title/version")
    ids = set()
    for path, item in doc["paths"].items():
        if not path.startswith("/"):
            problems.append(f"{path}: must start with /")
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            if method not in METHODS:
                problems.append(f"{path}: {method} is not an HTTP method")
            if not op.get("responses"):
                problems.append(f"{path} {method}: no responses")
            for code in op["responses"]:
                if not re.fullmatch(r"[1-5]\d\d|default", code) or "description" not in op["responses"][code]:
                    problems.append(f"{path} {method}: response {code}")
            if op["operationId"] in ids:
                problems.append(f"{path} {method}: operationId {op['operationId']} not unique")
            ids.add(op["operationId"])
            seen = set()
            for p in op["parameters"]:
                if p["in"] not in ("query", "header", "path", "cookie") or "name" not in p or "schema" not in p:
                    problems.append(f"{path} {method}: parameter {p}")
                if (p["name"], p["in"]) in seen:
                    problems.append(f"{path} {method}: parameter {p['name']} twice")
                seen.add((p["name"], p["in"]))
                if p["in"] == "path" and p.get("required") is not True:
                    problems.append(f"{path} {method}: path parameter not required")
            if {p["name"] for p in op["parameters"] if p["in"] == "path"} != templated:
                problems.append(f"{path} {method}: path parameters do not match the template")
            if not all(k == "x-acl" or k == "x-blocking" or not k.startswith("x") for k in op):
                problems.append(f"{path} {method}: unknown extension")
    return problems


def test_openapi_document_is_valid_and_covers_every_route():
    doc = openapi(ALL, version="1.17.0")
    assert _valid_openapi_3(doc) == []
    json.dumps(doc)  # plain JSON
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    want = {(r.method, r.path + "{param}" if r.prefix else r.path) for r in ALL}
    assert ops == want
    health = doc["paths"]["/v1/health/service/{param}"]["get"]
    names = {p["name"] for p in health["parameters"]}
    assert {"filter", "index", "wait", "stale", "consistent", "dc", "param"} <= names
    assert health["x-acl"] == "filter:node,service" and health["x-blocking"] is True
    kv_put = doc["paths"]["/v1/kv/{param}"]["put"]
    assert kv_put["x-acl"] == "key:write" and "requestBody" in kv_put


@pytest.mark.parametrize("route", ALL, ids=lambda r: f"{r.method} {r.path}")
def test_each_route_has_a_summary(route):
    assert route.summary
