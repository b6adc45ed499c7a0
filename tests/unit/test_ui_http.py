"""The web UI's HTTP side in-process: static files and the SPA fallback, the root redirect, the
internal endpoints with Consul's shapes (blocking), the metrics proxy's refusals, ui_config."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from http_inprocess import InProcessAgent, http_agent, json_body

from appliance.config import build_agent_config
from appliance.config.errors import ConfigError
from appliance.http.errors import HTTPError
from appliance.http.handlers.ui import page_config, script_json
from appliance.http.handlers.ui_proxy import target_url


def run(scenario: Callable[[InProcessAgent], Awaitable[Any]], *flags: str) -> Any:
    async def main() -> Any:
        async with http_agent(*flags) as api:
            return await scenario(api)

    return asyncio.run(main())


async def _register(api: InProcessAgent, node: str, service: str, checks: list[dict[str, Any]],
                    tags: list[str] | None = None, sid: str | None = None) -> None:
    body = {"Node": node, "Address": "10.0.0.1",
            "Service": {"ID": sid or service, "Service": service, "Port": 80, "Tags": tags or []},
            "Checks": checks}
    answer = await api.call("PUT", "/v1/catalog/register", body)
    assert answer.status == 200, answer.body


def test_root_redirects_and_index_is_served_with_its_config() -> None:
    async def scenario(api: InProcessAgent) -> None:
        root = await api.call("GET", "/")
        assert root.status == 301 and root.headers["Location"] == "/ui/"
        index = await api.call("GET", "/ui/")
        assert index.status == 200 and index.content_type == "text/html"
        assert index.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in index.headers["Content-Security-Policy"]
        html = (index.body or b"").decode()
        assert "CAIRN_UI_CONFIG" not in html and '"LocalDatacenter": "dc1"' in html
        deep = await api.call("GET", "/ui/services/web")  # a page of the app: index.html
        assert deep.status == 200 and deep.content_type == "text/html"
        js = await api.call("GET", "/ui/js/main.js")
        assert js.status == 200 and js.content_type == "text/javascript"
        cached = await api.call("GET", "/ui/js/main.js", headers={"If-None-Match": js.headers["ETag"]})
        assert cached.status == 304 and not cached.body
        missing = await api.call("GET", "/ui/js/nope.js")  # a missing asset is a 404, not index.html
        assert missing.status == 404
        escape = await api.call("GET", "/ui/../../pyproject.toml")
        assert escape.status == 404

    run(scenario)


def test_ui_disabled_answers_404() -> None:
    async def scenario(api: InProcessAgent) -> None:
        answer = await api.call("GET", "/ui/")
        assert answer.status == 404
        assert b"ensure the path starts with '/v1/'" in (answer.body or b"")

    run(scenario, "-ui=false")


def test_script_json_cannot_close_the_script_element() -> None:
    text = script_json({"x": "</script><img src=x onerror=alert(1)>\u2028"})
    assert "<" not in text and ">" not in text and "\u2028" not in text
    assert json.loads(text)["x"].startswith("</script>")


def test_services_summary_counts_unique_checks_with_node_checks() -> None:
    async def scenario(api: InProcessAgent) -> None:
        node_check = {"CheckID": "serfHealth", "Name": "Serf", "Status": "passing"}
        await _register(api, "a", "web", [node_check, {"CheckID": "web-http", "Name": "http", "Status": "critical",
                                                       "ServiceID": "web"}], tags=["v2", "prod"])
        await _register(api, "b", "web", [{"CheckID": "w", "Name": "w", "Status": "warning", "ServiceID": "web"}],
                        tags=["v1"])
        await _register(api, "b", "<img src=x onerror=alert(1)>", [], sid="x")
        answer = await api.call("GET", "/v1/internal/ui/services")
        assert answer.status == 200 and int(answer.headers["X-Consul-Index"]) > 0
        body = json_body(answer)
        web = next(s for s in body if s["Name"] == "web")
        assert web["InstanceCount"] == 2 and web["Nodes"] == ["a", "b"] and web["Tags"] == ["prod", "v1", "v2"]
        assert (web["ChecksPassing"], web["ChecksWarning"], web["ChecksCritical"]) == (1, 1, 1)
        assert web["GatewayConfig"] == {} and "Kind" not in web and web["ExternalSources"] is None
        other = next(s for s in body if s["Name"].startswith("<img"))
        assert other["Tags"] is None and other["ChecksWarning"] == 0  # web's check on b is not its own
        # a blocking read wakes when a check changes
        index = answer.headers["X-Consul-Index"]

        async def flip() -> None:
            await asyncio.sleep(0.05)
            await _register(api, "b", "web", [{"CheckID": "w", "Name": "w", "Status": "critical",
                                               "ServiceID": "web"}], tags=["v1"])

        task = asyncio.create_task(flip())
        woke = await api.call("GET", f"/v1/internal/ui/services?index={index}&wait=5s")
        await task
        web = next(s for s in json_body(woke) if s["Name"] == "web")
        assert web["ChecksCritical"] == 2

    run(scenario)


def test_nodes_and_node() -> None:
    async def scenario(api: InProcessAgent) -> None:
        await _register(api, "a", "web", [{"CheckID": "c", "Name": "c", "Status": "passing", "ServiceID": "web"}])
        nodes = json_body(await api.call("GET", "/v1/internal/ui/nodes"))
        a = next(n for n in nodes if n["Node"] == "a")
        assert a["Services"][0]["Service"] == "web" and a["Checks"][0]["CheckID"] == "c"
        assert set(a) >= {"ID", "Node", "Address", "TaggedAddresses", "Meta", "Services", "Checks"}
        one = await api.call("GET", "/v1/internal/ui/node/a")
        assert one.status == 200 and json_body(one)["Node"] == "a"
        missing = await api.call("GET", "/v1/internal/ui/node/zzz")
        assert missing.status == 404 and not missing.body
        empty = await api.call("GET", "/v1/internal/ui/node/")
        assert empty.status == 400 and empty.body == b"Missing node name"

    run(scenario)


def test_metrics_proxy_off_and_allow_list() -> None:
    async def scenario(api: InProcessAgent) -> None:
        answer = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/query?query=up")
        assert answer.status == 404 and answer.body == b"Metrics proxy is not enabled"

    run(scenario)
    allow = ("/api/v1/query", "/api/v1/query_range")
    base = "http://127.0.0.1:9090"
    assert target_url(base, "/v1/internal/ui/metrics-proxy/api/v1/query", allow) == base + "/api/v1/query"
    assert target_url(base, "/v1/internal/ui/metrics-proxy/api/v1/status/config", allow) is None
    assert target_url(base, "/v1/internal/ui/metrics-proxy/api/v1/x/../query", allow) == base + "/api/v1/query"
    assert target_url(base + "/prom", "/v1/internal/ui/metrics-proxy/api/v1/query", allow) is None
    with pytest.raises(HTTPError):
        target_url(base + "/prom", "/v1/internal/ui/metrics-proxy/../api/v1/query", ())


def test_ui_config_metrics_settings() -> None:
    hcl = ('ui_config { metrics_provider = "prometheus" metrics_proxy { base_url = "http://127.0.0.1:9090" '
           'add_headers = [{ name = "Authorization", value = "Bearer secret" }] } }')
    cfg = build_agent_config(["-dev", "-hcl", hcl])
    metrics = cfg.ui_metrics
    assert metrics.proxy_path_allowlist == ("/api/v1/query", "/api/v1/query_range")
    assert metrics.proxy_add_headers == (("Authorization", "Bearer secret"),)

    class Ctx:
        config = cfg

    shown = json.dumps(page_config(Ctx()))  # type: ignore[arg-type]
    assert "secret" not in shown and "9090" not in shown and '"metrics_proxy_enabled": true' in shown
    with pytest.raises(ConfigError, match="base_url must be a valid http or https URL"):
        build_agent_config(["-dev", "-hcl", 'ui_config { metrics_proxy { base_url = "ftp://x" } }'])
    with pytest.raises(ConfigError, match="ui-content-path can only contain"):
        build_agent_config(["-dev", "-ui-content-path", "/a b/"])
    with pytest.raises(ConfigError, match="metrics_provider_options_json must be empty"):
        build_agent_config(["-dev", "-hcl", 'ui_config { metrics_provider_options_json = "[1]" }'])


def test_metrics_proxy_forwards_allowed_paths_without_the_callers_headers() -> None:
    from aiohttp import web

    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers)))
        return web.json_response({"status": "success", "data": {"result": []}})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        hcl = (f'ui_config {{ metrics_provider = "prometheus" metrics_proxy {{ base_url = "http://127.0.0.1:{port}" '
               'add_headers = [{ name = "X-Scope", value = "team-a" }] } }')
        try:
            async with http_agent("-hcl", hcl) as api:
                ok = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/query?query=up&time=1",
                                    headers={"X-Consul-Token": "secret-token", "Cookie": "a=b",
                                             "Authorization": "Bearer secret-token"})
                assert ok.status == 200 and json_body(ok)["status"] == "success"
                refused = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/status/config")
                assert refused.status == 403 and refused.body == b""
        finally:
            await runner.cleanup()
        assert len(seen) == 1
        path, headers = seen[0]
        assert path == "/api/v1/query?query=up&time=1"
        assert headers.get("X-Scope") == "team-a"
        assert not {"X-Consul-Token", "Cookie", "Authorization"} & set(headers)

    asyncio.run(main())


def test_metrics_proxy_backend_down_is_a_json_502() -> None:
    async def scenario(api: InProcessAgent) -> None:
        answer = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/query?query=up")
        assert answer.status == 502 and json_body(answer)["error"] == "metrics backend unreachable"

    hcl = 'ui_config { metrics_provider = "prometheus" metrics_proxy { base_url = "http://127.0.0.1:9" } }'
    run(scenario, "-hcl", hcl)


def test_content_path_serves_the_ui_elsewhere() -> None:
    from appliance.http.routes import ui_content_routes

    async def scenario(api: InProcessAgent) -> None:
        api.router.add_all(ui_content_routes(api.ctx.config.ui_content_path))  # as the agent does
        root = await api.call("GET", "/ui/")
        assert root.status == 301 and root.headers["Location"] == "/console/"
        index = await api.call("GET", "/console/services")
        html = (index.body or b"").decode()
        assert index.status == 200 and '<base href="/console/">' in html and '"ContentPath": "/console/"' in html
        assert (await api.call("GET", "/console/js/main.js")).status == 200
        assert (await api.call("GET", "/ui/js/main.js")).status == 404

    run(scenario, "-ui-content-path", "console")
    assert ui_content_routes("/ui/") == ()
    with pytest.raises(ConfigError, match="cannot be the root"):
        build_agent_config(["-dev", "-ui-content-path", "/"])


def test_internal_endpoints_leave_out_what_the_token_may_not_read() -> None:
    root = {"X-Consul-Token": "root-secret"}

    async def scenario(api: InProcessAgent) -> None:
        for node, service in (("a", "web"), ("b", "db")):
            body = {"Node": node, "Address": "10.0.0.1", "Service": {"ID": service, "Service": service, "Port": 1}}
            assert (await api.call("PUT", "/v1/catalog/register", body, headers=root)).status == 200
        rules = 'service "web" { policy = "read" } node "a" { policy = "read" }'
        policy = await api.call("PUT", "/v1/acl/policy", {"Name": "web-only", "Rules": rules}, headers=root)
        assert policy.status == 200, policy.body
        token = await api.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "web-only"}]}, headers=root)
        assert token.status == 200, token.body
        mine = {"X-Consul-Token": json_body(token)["SecretID"]}
        services = await api.call("GET", "/v1/internal/ui/services", headers=mine)
        assert [s["Name"] for s in json_body(services)] == ["web"]
        assert services.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
        nodes = await api.call("GET", "/v1/internal/ui/nodes", headers=mine)
        assert [n["Node"] for n in json_body(nodes)] == ["a"]
        assert (await api.call("GET", "/v1/internal/ui/node/b", headers=mine)).status == 404
        everything = await api.call("GET", "/v1/internal/ui/services", headers=root)
        assert {s["Name"] for s in json_body(everything)} >= {"web", "db"}
        proxy = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/query", headers=mine)
        assert proxy.status == 403  # the proxy needs node:read and service:read on everything
        proxy = await api.call("GET", "/v1/internal/ui/metrics-proxy/api/v1/query", headers=root)
        assert proxy.status == 502  # allowed; nothing listens on port 9

    acl = ('acl { enabled = true default_policy = "deny" tokens { initial_management = "root-secret" } } '
           'ui_config { metrics_provider = "prometheus" metrics_proxy { base_url = "http://127.0.0.1:9" } }')
    run(scenario, "-hcl", acl)
