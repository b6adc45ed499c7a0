"""The web UI in Debian's headless Chromium against a real `cairn agent -dev`.

What a person sees: the services page's health counts, a check going critical shown within 2 s
without a reload (a blocking query), a KV key created, edited (a concurrent change refused) and
deleted through the pages and seen through the HTTP API, a node's checks, hostile names and
values rendered as text, no serious or critical axe-core violations in light and dark, no
JavaScript errors. An HTTP check against the agent's own root passes (the 301 to /ui/).

Screenshots of each page go to $CAIRN_UI_SCREENSHOTS when it is set (docs/ui/ holds the ones
docs/ui.md shows), else to the test's temporary directory.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, wait_until
from ui_browser import Page, available, axe_violations, browser, page_of, shots_dir

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not available(), reason="needs Playwright and Debian's chromium (scripts/debian-packages.txt)"),
]

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("ui-agent"), node="ui-node")
    try:
        for body in (
            {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1", "blue"], "Meta": {"team": "shop",
             "docs": "https://example.invalid/web", "evil": "javascript:alert(1)"},
             "Check": {"CheckID": "web-1-ttl", "Name": "web 1 alive", "TTL": "10m"}},
            {"Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2"],
             "Check": {"CheckID": "web-2-ttl", "Name": "web 2 alive", "TTL": "10m"}},
            {"Name": "api", "ID": "api-1", "Port": 9000, "Tags": ["v1"],
             "Check": {"CheckID": "api-ttl", "Name": "api alive", "TTL": "10m"}},
            {"Name": XSS, "ID": "hostile", "Port": 1, "Tags": [XSS], "Meta": {"x": XSS}},
        ):
            status, _, data = proc.put("/v1/agent/service/register", body)
            assert status == 200, data
        for check, verb in (("web-1-ttl", "pass"), ("web-2-ttl", "warn"), ("api-ttl", "pass")):
            assert proc.put(f"/v1/agent/check/{verb}/{check}?note=" + "ok")[0] == 200
        assert proc.put("/v1/kv/app/config", b'{"replicas": 3, "name": "web"}')[0] == 200
        assert proc.put("/v1/kv/app/hostile", XSS.encode())[0] == 200
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shots_dir(tmp_path_factory.mktemp("ui-shots"))


def row(page: Any, attr: str, value: str) -> Any:
    return page.locator(f"[{attr}={json.dumps(value)}]")


def visit(chromium: Any, agent: AgentProcess, path: str, ready: str) -> tuple[Page, Any]:
    """A fresh page at `path`, once `ready` (a selector) is on it."""
    p = page_of(chromium)
    p.page.goto(agent.url + path)
    p.page.locator(ready).first.wait_for()
    return p, p.page


def kv_value(agent: AgentProcess, key: str) -> str | None:
    status, _, body = agent.get_json(f"/v1/kv/{key}")
    if status == 404:
        return None
    return base64.b64decode(body[0]["Value"] or "").decode()


def test_root_redirects_and_an_http_check_on_it_passes(agent: AgentProcess) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(agent.url + "/", timeout=5)
        pytest.fail("the root did not redirect")
    except urllib.error.HTTPError as err:
        assert err.code == 301 and err.headers["Location"] == "/ui/"
    check = {"CheckID": "root", "Name": "agent root", "HTTP": agent.url, "Interval": "1s"}
    assert agent.put("/v1/agent/check/register", check)[0] == 200
    try:
        wait_until(lambda: (agent.get_json("/v1/agent/checks")[2].get("root") or {}).get("Status") == "passing",
                   timeout=10, what="the HTTP check on the agent's root passing")
    finally:
        agent.put("/v1/agent/check/deregister/root")


def test_services_page_counts_and_live_update(agent: AgentProcess, chromium: Any, shots: Path) -> None:
    p, page = visit(chromium, agent, "/ui/", '[data-service="web"]')
    web = row(page, "data-service", "web")
    assert web.locator("[data-count=passing]").inner_text() == "2 passing"  # serfHealth (its node), web-1
    assert web.locator("[data-count=warning]").inner_text() == "1 warning"
    assert web.locator("[data-count=critical]").inner_text() == "0 critical"
    assert web.locator("td").nth(2).inner_text() == "2"
    page.screenshot(path=str(shots / "services.png"), full_page=True)
    # a check flips to critical: the page shows it within 2 s, without a reload
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    assert agent.put("/v1/agent/check/fail/web-1-ttl?note=down")[0] == 200
    page.locator('[data-service="web"] [data-count=critical]').filter(has_text="1 critical").wait_for(timeout=2000)
    assert navigations == []
    # search, health filter, sort, all in the URL
    page.fill("#svc-search", "ap")
    assert page.locator("#services tbody tr").count() == 1
    page.fill("#svc-search", "")
    page.select_option("#svc-status", "critical")
    assert [r.get_attribute("data-service") for r in page.locator("#services tbody tr").all()] == ["web"]
    assert "status=critical" in page.url
    page.select_option("#svc-status", "")
    page.select_option("#svc-tag", "v1")
    assert {r.get_attribute("data-service") for r in page.locator("#services tbody tr").all()} == {"web", "api"}
    assert agent.put("/v1/agent/check/pass/web-1-ttl")[0] == 200
    assert p.problems == [] and p.dialogs == []


def test_service_page_instances_and_checks(agent: AgentProcess, chromium: Any, shots: Path) -> None:
    p, page = visit(chromium, agent, "/ui/services/web", '[data-instance="web-2"]')
    assert page.locator("section[data-instance]").count() == 2
    web1 = page.locator('[data-instance="web-1"]')
    assert "web 1 alive" in web1.inner_text() and "8080" in web1.inner_text()
    assert web1.locator('a[href="https://example.invalid/web"]').count() == 1
    assert web1.locator("a[href^=javascript]").count() == 0  # a javascript: meta value stays text
    assert page.locator("[data-metrics=off]").count() == 1  # no Prometheus: how to configure it
    page.screenshot(path=str(shots / "service.png"), full_page=True)
    assert p.problems == []


def test_node_page_shows_its_checks(agent: AgentProcess, chromium: Any, shots: Path) -> None:
    p, page = visit(chromium, agent, "/ui/nodes", '[data-node="ui-node"]')
    page.screenshot(path=str(shots / "nodes.png"), full_page=True)
    page.click('[data-node="ui-node"] a')
    page.locator("#node-checks").wait_for()
    checks = {r.get_attribute("data-check") for r in page.locator("#node-checks tbody tr").all()}
    assert {"serfHealth", "web-1-ttl", "web-2-ttl", "api-ttl"} <= checks
    assert "warning" in page.locator('#node-checks [data-check="web-2-ttl"]').inner_text()
    page.screenshot(path=str(shots / "node.png"), full_page=True)
    assert p.problems == []


def test_kv_create_edit_conflict_delete(agent: AgentProcess, chromium: Any, shots: Path) -> None:
    p, page = visit(chromium, agent, "/ui/kv/app/", '[data-key="app/config"]')
    page.screenshot(path=str(shots / "kv.png"), full_page=True)
    # create
    page.fill("#kv-new-key", "feature")
    page.fill("#kv-new-value", "on")
    page.click("#kv-create button[type=submit]")
    page.locator("#kv-value").wait_for()
    assert kv_value(agent, "app/feature") == "on"
    # edit, then a change made elsewhere first: the save is refused with a message
    page.fill("#kv-value", "off")
    assert agent.put("/v1/kv/app/feature", b"changed elsewhere")[0] == 200
    page.click("#kv-save")
    note = page.locator("#kv-note [role=alert]")
    note.wait_for()
    assert "someone else changed this key" in note.inner_text()
    assert kv_value(agent, "app/feature") == "changed elsewhere"
    # after a reload the edit goes through
    page.reload()
    page.locator("#kv-value").wait_for()
    assert page.input_value("#kv-value") == "changed elsewhere"
    page.fill("#kv-value", "off")
    page.click("#kv-save")
    page.locator("#kv-note").filter(has_text="Saved.").wait_for()
    assert kv_value(agent, "app/feature") == "off"
    # an invalid JSON value is not saved
    page.goto(agent.url + "/ui/kv/app/config")
    page.locator("#kv-value").wait_for()
    assert page.input_value("#kv-format") == "json"
    page.screenshot(path=str(shots / "kv-edit.png"), full_page=True)
    page.fill("#kv-value", '{"replicas": ')
    page.click("#kv-save")
    assert "Invalid JSON" in page.locator("#kv-note").inner_text()
    assert kv_value(agent, "app/config") == '{"replicas": 3, "name": "web"}'
    # a value over kv_max_value_size: the agent's error, as it wrote it
    page.select_option("#kv-format", "text")
    page.fill("#kv-value", "x" * (512 * 1024 + 1))
    page.click("#kv-save")
    page.locator("#kv-note").filter(has_text="too large").wait_for()
    assert "Request body(524289 bytes) too large" in page.locator("#kv-note").inner_text()
    assert kv_value(agent, "app/config") == '{"replicas": 3, "name": "web"}'
    # delete a key (two steps, no browser dialog)
    page.goto(agent.url + "/ui/kv/app/feature")
    page.locator("#kv-value").wait_for()
    delete = page.get_by_role("button", name="Delete")
    delete.click()
    page.get_by_role("button", name="Really delete this key?").click()
    page.locator("#kv-list").wait_for()
    wait_until(lambda: kv_value(agent, "app/feature") is None, timeout=5, what="app/feature deleted")
    # delete a folder
    assert agent.put("/v1/kv/tmp/a", b"1")[0] == 200 and agent.put("/v1/kv/tmp/b/c", b"2")[0] == 200
    page.goto(agent.url + "/ui/kv/tmp/")
    page.locator('[data-key="tmp/a"]').wait_for()
    page.get_by_role("button", name="Delete folder").click()
    page.get_by_role("button", name="Really delete tmp/ and everything under it?").click()
    wait_until(lambda: agent.get("/v1/kv/tmp/?recurse")[0] == 404, timeout=5, what="tmp/ deleted")
    assert p.problems == [] and p.dialogs == []


def test_hostile_names_and_values_render_as_text(agent: AgentProcess, chromium: Any) -> None:
    p = page_of(chromium)
    page = p.page
    page.goto(agent.url + "/ui/services")
    hostile = row(page, "data-service", XSS)
    hostile.wait_for()
    assert hostile.locator("a").inner_text() == XSS
    assert page.locator("main img").count() == 0
    hostile.locator("a").click()
    page.locator('[data-instance="hostile"]').wait_for()
    assert page.locator("h1").inner_text() == XSS and page.locator("main img").count() == 0
    assert XSS in page.locator('[data-instance="hostile"]').inner_text()
    page.goto(agent.url + "/ui/kv/app/hostile")
    page.locator("#kv-value").wait_for()
    assert page.input_value("#kv-value") == XSS
    assert XSS in page.locator("#kv-preview").inner_text() and page.locator("main img").count() == 0
    page.wait_for_timeout(300)
    assert p.dialogs == [] and p.problems == []


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_axe_finds_no_serious_violations(agent: AgentProcess, chromium: Any, shots: Path, dark: bool) -> None:
    p = page_of(chromium, dark=dark, axe=True)
    page = p.page
    found = {}
    for path, ready in (("/ui/services", "[data-service]"), ("/ui/services/web", "[data-instance]"),
                        ("/ui/nodes", "[data-node]"), ("/ui/nodes/ui-node", "#node-checks"),
                        ("/ui/kv/app/", "[data-key]"), ("/ui/kv/app/config", "#kv-value"),
                        ("/ui/cluster", "[data-member]")):
        page.goto(agent.url + path)
        page.locator(ready).first.wait_for()
        violations = axe_violations(page)
        if violations:
            found[path] = violations
    if dark:
        page.goto(agent.url + "/ui/services")
        page.locator("[data-service]").first.wait_for()
        page.screenshot(path=str(shots / "services-dark.png"), full_page=True)
    assert found == {}, json.dumps(found, indent=1)
    assert p.problems == []


def test_cluster_page_and_narrow_window(agent: AgentProcess, chromium: Any, shots: Path) -> None:
    p, page = visit(chromium, agent, "/ui/cluster", '[data-member="ui-node"]')
    page.locator("[data-leader]").wait_for()
    assert "alive" in row(page, "data-member", "ui-node").inner_text()
    page.screenshot(path=str(shots / "cluster.png"), full_page=True)
    narrow = page_of(chromium, width=380, height=800)
    narrow.page.goto(agent.url + "/ui/services")
    narrow.page.locator("[data-service]").first.wait_for()
    width = narrow.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 400, f"the services page scrolls sideways in a narrow window ({width}px)"
    narrow.page.screenshot(path=str(shots / "services-narrow.png"), full_page=True)
    assert p.problems == [] and narrow.problems == []


def test_one_long_poll_per_view_aborted_when_the_view_closes(agent: AgentProcess, chromium: Any) -> None:
    p = page_of(chromium)
    page = p.page
    started: list[str] = []
    aborted: list[str] = []
    page.on("request", lambda r: started.append(r.url) if "index=" in r.url else None)
    page.on("requestfailed", lambda r: aborted.append(r.url) if "index=" in r.url else None)
    page.goto(agent.url + "/ui/services")

    def until(predicate: Any, what: str) -> None:
        for _ in range(100):  # Playwright delivers events while it waits
            if predicate():
                return
            page.wait_for_timeout(50)
        pytest.fail(f"timed out waiting for {what}: started {started}, aborted {aborted}")

    until(lambda: any("/v1/internal/ui/services?" in u for u in started), "the services long-poll")
    page.get_by_role("link", name="Nodes").click()
    row(page, "data-node", "ui-node").wait_for()
    until(lambda: any("/v1/internal/ui/services?" in u for u in aborted), "the services long-poll aborted")
    until(lambda: any("/v1/internal/ui/nodes?" in u for u in started), "the nodes long-poll")
    page.wait_for_timeout(300)
    assert len([u for u in started if "/v1/internal/ui/services?" in u]) == 1, started
    assert len([u for u in started if "/v1/internal/ui/nodes?" in u]) == 1, started
    assert p.problems == []


def test_acl_token_field_is_kept_and_sent_as_x_consul_token(chromium: Any, tmp_path: Path) -> None:
    acl = 'acl { enabled = true default_policy = "deny" tokens { initial_management = "ui-root-secret" } }'
    proc = AgentProcess(tmp_path, "-hcl", acl, node="acl-node")
    try:
        root = {"X-Consul-Token": "ui-root-secret"}
        body = {"Name": "billing", "Port": 1}
        wait_until(lambda: proc.put("/v1/agent/service/register", body, headers=root)[0] == 200, timeout=10,
                   what="the service registered with the management token")
        p = page_of(chromium)
        page = p.page
        sent: list[str | None] = []
        page.on("request", lambda r: sent.append(r.headers.get("x-consul-token"))
                if "/v1/internal/ui/services" in r.url else None)
        page.goto(proc.url + "/ui/services")
        page.locator("#svc-summary").filter(has_text="0 of 0 services").wait_for()  # anonymous reads nothing
        assert row(page, "data-service", "billing").count() == 0
        page.fill("#token-input", "ui-root-secret")
        page.click("#token-form button[type=submit]")
        row(page, "data-service", "billing").wait_for()
        assert page.evaluate("() => localStorage.getItem('cairn:token')") == "ui-root-secret"
        assert "ui-root-secret" in sent and "token=" not in page.url
        page.reload()  # kept in the browser
        row(page, "data-service", "billing").wait_for()
        page.click("#token-forget")
        page.locator("#svc-summary").filter(has_text="0 of 0 services").wait_for()
        assert page.evaluate("() => localStorage.getItem('cairn:token')") is None
        assert p.problems == []
        p.context.close()  # its long-poll would hold the agent's shutdown (a parked query is not cut)
    finally:
        proc.stop()


def test_keyboard_only_search_and_open_a_service(agent: AgentProcess, chromium: Any) -> None:
    p, page = visit(chromium, agent, "/ui/services", '[data-service="api"]')
    active = "() => document.activeElement && (document.activeElement.id || document.activeElement.textContent)"
    page.keyboard.press("Tab")
    assert page.evaluate(active) == "Skip to content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate(active) == "svc-search"
    page.keyboard.type("api")
    for _ in range(4):  # health, tag, sort, then the one service left
        page.keyboard.press("Tab")
    assert page.evaluate(active) == "api"
    page.keyboard.press("Enter")
    page.locator('[data-instance="api-1"]').wait_for()
    assert page.locator("h1").inner_text() == "api"
    assert p.problems == []


def test_a_live_update_keeps_the_keyboard_focus(agent: AgentProcess, chromium: Any) -> None:
    # The services list is redrawn on every answer of its blocking query; a keyboard user's focus
    # on a row's link stays on that service's link, not the top of the page.
    p, page = visit(chromium, agent, "/ui/services", '[data-service="api"]')
    page.locator('[data-service="api"] a').focus()
    body = {"Name": "focus-probe", "ID": "focus-probe", "Port": 1}
    assert agent.put("/v1/agent/service/register", body)[0] == 200
    try:
        page.locator('[data-service="focus-probe"]').wait_for()
        assert page.evaluate("() => document.activeElement.textContent") == "api"
        page.keyboard.press("Enter")
        page.locator('[data-instance="api-1"]').wait_for()
    finally:
        agent.put("/v1/agent/service/deregister/focus-probe")
    assert p.problems == []
