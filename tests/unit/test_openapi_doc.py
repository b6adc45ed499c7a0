"""docs/openapi.json, the API's contract: current with the route table, and the table's exact image.

Every route the agent and its bundled extensions mount is an operation of the shipped document,
and every operation of the document is a route the router resolves to with that method, so
neither can gain an endpoint the other lacks. scripts/openapi.py regenerates the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from appliance.http.openapi import document_path
from appliance.http.routes import ROUTES
from appliance.http.routing import Router
from sd.http import ROUTES as SD_ROUTES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "docs" / "openapi.json").read_text())
ALL = (*ROUTES, *SD_ROUTES)


def test_the_shipped_document_is_what_the_generator_writes():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "openapi.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_every_route_is_in_the_document_with_its_permission():
    for r in ALL:
        op = SHIPPED["paths"].get(document_path(r), {}).get(r.method.lower())
        assert op is not None, f"{r.method} {r.path} missing from docs/openapi.json"
        assert op["x-acl"] == r.acl and op["x-blocking"] == r.blocking


def test_every_document_operation_is_a_route():
    router = Router(ALL)
    for path, item in SHIPPED["paths"].items():
        concrete = path.replace("{param}", "x")
        found = router.resolve(concrete)
        assert found is not None, f"{path} is no route"
        for method in item:
            route = found[1].get(method.upper())
            assert route is not None and document_path(route) == path, f"{method.upper()} {path} is no route"


def test_operations_match_routes_one_for_one():
    ops = {(m.upper(), p) for p, item in SHIPPED["paths"].items() for m in item}
    assert ops == {(r.method, document_path(r)) for r in ALL}
    assert len(ops) == len(ALL)


def test_bodies_are_typed_by_what_the_handler_parses():
    kv = SHIPPED["paths"]["/v1/kv/{param}"]["put"]["requestBody"]["content"]
    assert "application/octet-stream" in kv
    reg = SHIPPED["paths"]["/v1/agent/service/register"]["put"]["requestBody"]["content"]
    assert "application/json" in reg
    assert SHIPPED["paths"]["/v1/status/leader"]["get"]["security"] == [{}]
    assert "consulToken" in SHIPPED["components"]["securitySchemes"]


def test_the_document_is_valid_openapi_3():
    from openapi_spec_validator import validate

    validate(SHIPPED)
