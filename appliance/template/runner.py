"""`cairn template`'s loop: watch what the templates read, render, write, run commands.

How it works
------------
Each template is rendered against the answers known so far. Every dependency a render uses
(`key "a"`, `service "web"`, ...) gets one `Watcher` thread that asks the agent with blocking
queries (`?index=<X-Consul-Index>&wait=60s&stale`) and keeps the last answer; when an answer
differs from the previous one it wakes the loop, which renders again the templates that used that
dependency. A render whose data is not all there yet (a watch that has not answered, a `key` that
does not exist) is not written. So the first render of a template needs as many rounds as it has
levels of dependencies, and later ones follow a KV or catalog change within one round trip.

Quiescence: with `wait { min max }` a template is rendered once its data has been quiet for `min`,
or `max` after the first change, whichever comes first. The first render is not delayed, and
`-once` ignores waits. A completed render is written with `output.write_atomic`; the command runs
only when the file changed. With `-dry` the text goes to stdout instead (`> destination` then the
text) and no command runs.

Watch errors (agent down, HTTP errors) are retried with a growing pause, 250 ms doubling up to
1 minute; after 12 failures in a row the runner stops with an error. A template that fails to
execute with all its data present is an error too (consul-template's `error_fatal`): the runner
stops and `run()` returns 13. Dependencies no template uses any more stop being watched.
`request_reload` (SIGHUP) loads the templates again through `reloader` and renders them all; a
reload that fails is logged and the running templates stay.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from appliance.template import Answers, Template
from appliance.template.config import ConfigError, TemplateConfig, Wait
from appliance.template.deps import Dep
from appliance.template.lexer import TemplateError
from appliance.template.output import OutputError, run_command, write_atomic

BLOCK_WAIT_S = 60.0
MIN_INTERVAL_S = 0.1
RETRY_ATTEMPTS = 12
RETRY_BACKOFF_S = 0.25
RETRY_MAX_BACKOFF_S = 60.0
MAX_STALE_MS = 2000
EXIT_RUNNER_ERROR = 13


class FetchError(Exception):
    """The agent did not answer, or answered with an error status."""


Fetch = Callable[[str, list[tuple[str, str]], float], tuple[int, Mapping[str, str], bytes]]


class AgentHTTP:
    """GET requests to the agent's HTTP API with the ACL token; 4xx/5xx are answers, not
    exceptions, and the headers of a 404 are kept (a missing key still carries X-Consul-Index)."""

    def __init__(self, base_url: str, token: str = "", opener: urllib.request.OpenerDirector | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __call__(self, path: str, params: list[tuple[str, str]],
                 timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        headers = {"User-Agent": "cairn-template"}
        if self.token:
            headers["X-Consul-Token"] = self.token
        req = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) base URL from the flags
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f'Get "{url}": {reason}') from None


class Watcher(threading.Thread):
    """One dependency, asked again and again with blocking queries."""

    def __init__(self, dep: Dep, fetch: Fetch, on_change: Callable[[Dep, Any], None],
                 on_fatal: Callable[[str], None], log: Callable[[str], None], wait_s: float = BLOCK_WAIT_S) -> None:
        super().__init__(name=f"watch {dep.label}", daemon=True)
        self.dep = dep
        self.fetch = fetch
        self.on_change = on_change
        self.on_fatal = on_fatal
        self.log = log
        self.wait_s = wait_s
        self.stopped = threading.Event()
        self.value: Any = None
        self.have = False

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        index = 0
        failures = 0
        stale = True
        while not self.stopped.is_set():
            params = list(self.dep.params)
            if stale:
                params.append(("stale", ""))
            if self.dep.blocking and index > 0:
                params += [("index", str(index)), ("wait", f"{int(self.wait_s * 1000)}ms")]
            started = time.monotonic()
            try:
                status, headers, body = self.fetch(self.dep.path, params, self.wait_s * 17 / 16 + 10)
                value = self._decode(status, body)
            except FetchError as exc:
                failures += 1
                if failures >= RETRY_ATTEMPTS:
                    self.on_fatal(f"{self.dep.label}: giving up after {failures} attempts: {exc}")
                    return
                pause = min(RETRY_BACKOFF_S * 2 ** (failures - 1), RETRY_MAX_BACKOFF_S)
                self.log(f"[WARN] {self.dep.label}: {exc} (retry {failures} in {pause:g}s)")
                index = 0
                self.stopped.wait(pause)
                continue
            failures = 0
            if self.stopped.is_set():
                return
            if not self.have or value != self.value:
                self.value, self.have = value, True
                self.on_change(self.dep, value)
            if not self.dep.blocking:
                return
            try:
                last_contact = int(headers.get("x-consul-lastcontact", "0"))
            except ValueError:
                last_contact = 0
            stale = not (stale and last_contact > MAX_STALE_MS)  # too stale: ask the leader once
            try:
                new_index = int(headers.get("x-consul-index", "0"))
            except ValueError:
                new_index = 0
            index = new_index if new_index >= index else 0
            pause = MIN_INTERVAL_S if new_index else 1.0
            elapsed = time.monotonic() - started
            if elapsed < pause:
                self.stopped.wait(pause - elapsed)

    def _decode(self, status: int, body: bytes) -> Any:
        if status == 404:
            return None
        if not 200 <= status < 300:
            text = body.decode("utf-8", "replace").strip()
            raise FetchError(f"Unexpected response code: {status} ({text})")
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError("invalid JSON in response") from None


@dataclass
class _State:
    config: TemplateConfig
    template: Template
    used: set[Dep] = field(default_factory=set)
    complete: bool = False
    rendered: bool = False
    due: float | None = 0.0  # monotonic time of the next render, None when nothing changed
    first_change: float = 0.0
    last_dry: str | None = None


class Runner:
    def __init__(self, templates: list[tuple[TemplateConfig, Template]], fetch: Fetch, *, once: bool = False,
                 dry: bool = False, wait: Wait | None = None, env: Mapping[str, str] | None = None,
                 now: Callable[[], datetime] | None = None, log: Callable[[str], None] | None = None,
                 stdout: TextIO | None = None, block_wait_s: float = BLOCK_WAIT_S) -> None:
        self.states = [_State(c, t) for c, t in templates]
        self.fetch = fetch
        self.once = once
        self.dry = dry
        self.wait = wait
        self.env = dict(env or {})
        self.now = now or (lambda: datetime.now(UTC))
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stdout = stdout or sys.stdout
        self.block_wait_s = block_wait_s
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.answers: dict[Dep, Any] = {}
        self.changed: set[Dep] = set()
        self.watchers: dict[Dep, Watcher] = {}
        self.fatal: str | None = None
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.reloader: Callable[[], list[tuple[TemplateConfig, Template]]] | None = None

    # -- called from watcher threads --------------------------------------------------------

    def _on_change(self, dep: Dep, value: Any) -> None:
        with self.lock:
            self.answers[dep] = value
            self.changed.add(dep)
        self.wake.set()

    def _on_fatal(self, message: str) -> None:
        with self.lock:
            self.fatal = self.fatal or message
        self.wake.set()

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def request_reload(self) -> None:
        """Load the templates again (SIGHUP); they are all rendered at once."""
        self.reload_requested.set()
        self.wake.set()

    def _reload(self) -> None:
        self.reload_requested.clear()
        if self.reloader is None:
            return
        try:
            templates = self.reloader()
        except (ConfigError, TemplateError) as exc:
            self.log(f"[ERR] reload failed, keeping the running templates: {exc}")
            return
        self.states = [_State(c, t) for c, t in templates]
        self.log(f"[INFO] reloaded {len(templates)} template(s)")

    def run(self) -> int:
        try:
            while not self.stopping.is_set():
                if self.reload_requested.is_set():
                    self._reload()
                now = time.monotonic()
                rendered = False
                for state in self.states:
                    if state.due is not None and state.due <= now:
                        state.due = None
                        self._render(state)
                        rendered = True
                if rendered:
                    self._sync_watchers()
                if self.fatal:
                    self.log(f"[ERR] {self.fatal}")
                    return EXIT_RUNNER_ERROR
                if self.once and all(s.complete and s.due is None for s in self.states):
                    return 0
                dues = [s.due for s in self.states if s.due is not None]
                timeout = min([1.0, *(max(0.0, d - time.monotonic()) for d in dues)])
                self.wake.wait(timeout)
                self.wake.clear()
                self._collect_changes()
            return 0
        finally:
            for watcher in self.watchers.values():
                watcher.stop()

    def _collect_changes(self) -> None:
        with self.lock:
            changed, self.changed = self.changed, set()
        if not changed:
            return
        now = time.monotonic()
        for state in self.states:
            if not state.used & changed:
                continue
            wait = state.config.wait or self.wait
            if self.once or not state.rendered or wait is None or not wait.enabled:
                state.due = now
                continue
            if state.due is None:
                state.first_change = now
            state.due = min(now + wait.min_s, state.first_change + wait.max_s)

    def _render(self, state: _State) -> None:
        with self.lock:
            answers = dict(self.answers)
        resolver = Answers(answers)
        cfg = state.config
        try:
            text = state.template.render(resolver, self.env, self.now)
        except TemplateError as exc:
            text = None
            if not resolver.missing:
                self.fatal = self.fatal or str(exc)
        state.used = resolver.used
        if text is None or resolver.missing:
            state.complete = False
            return
        state.complete = True
        state.rendered = True
        if self.dry:
            if text != state.last_dry:
                state.last_dry = text
                self.stdout.write(f"> {cfg.destination}\n{text}")
                self.stdout.flush()
            return
        try:
            changed = write_atomic(cfg.destination, text.encode(), perms=cfg.perms,
                                   create_dirs=cfg.create_dest_dirs, backup=cfg.backup)
        except OutputError as exc:
            self.fatal = self.fatal or f"{cfg.name}: {exc}"
            return
        if not changed:
            return
        self.log(f"[INFO] rendered {cfg.name!r} => {cfg.destination!r}")
        if cfg.command:
            self.log(f"[INFO] running command {cfg.command!r}")
            try:
                run_command(cfg.command, cfg.command_timeout_s)
            except OutputError as exc:
                self.log(f"[ERR] {cfg.name}: {exc}")
                if self.once:
                    self.fatal = self.fatal or str(exc)

    def _sync_watchers(self) -> None:
        wanted: set[Dep] = set().union(*(s.used for s in self.states))
        for dep in wanted - set(self.watchers):
            watcher = Watcher(dep, self.fetch, self._on_change, self._on_fatal, self.log, self.block_wait_s)
            self.watchers[dep] = watcher
            watcher.start()
        for dep in set(self.watchers) - wanted:
            self.watchers.pop(dep).stop()
            with self.lock:
                self.answers.pop(dep, None)
