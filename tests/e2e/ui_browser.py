"""Headless Chromium (Debian's `chromium`) driven by Playwright for the web UI's tests and bench.

`browser()` starts the Debian browser (never a downloaded one) with background networking off;
`page_of()` opens a page that records uncaught errors, console errors and failed requests, so
a test can assert a page ran clean. `axe_violations()` injects the vendored axe-core
(tests/e2e/vendor/axe-core, MPL-2.0) and returns the serious and critical violations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CAIRN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps"]


def available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A page and what went wrong on it (uncaught errors, console errors, failed requests)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda err: self.problems.append(f"pageerror: {err}"))
        self.page.on("console", self._console)
        self.page.on("requestfailed", self._failed)
        self.page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        # Chromium logs every 4xx answer the page asked for and handled (a KV folder emptied under
        # an open view is Consul's 404, an oversized value its 413); those are not errors of the page
        if msg.type == "error" and "responded with a status of 4" not in msg.text:
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # a long-poll aborted when its view closes is expected
            self.problems.append(f"request failed: {request.url} {failure}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def page_of(chromium: Any, *, dark: bool = False, width: int = 1280, height: int = 900, axe: bool = False) -> Page:
    """A new page; `axe` lifts the page's Content-Security-Policy so axe-core can be injected."""
    context = chromium.new_context(viewport={"width": width, "height": height}, bypass_csp=axe,
                                   color_scheme="dark" if dark else "light")
    return Page(context)


def shots_dir(fallback: Path) -> Path:
    """Where screenshots go: $CAIRN_UI_SCREENSHOTS (docs/ui/ for the docs), else `fallback`."""
    target = os.environ.get("CAIRN_UI_SCREENSHOTS")
    path = Path(target) if target else fallback
    path.mkdir(parents=True, exist_ok=True)
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations (WCAG 2 A and AA rules) on the current page."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]
