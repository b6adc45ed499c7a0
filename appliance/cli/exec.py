"""``cairn exec``: run a command on the agents of a datacenter, as ``consul exec`` does.

Off by default on every agent: an agent runs the job only with ``disable_remote_exec = false``
(appliance/rexec.py; docs/security.md explains the risk). With it off no agent answers and the
verb ends with ``0 / 0 node(s) completed / acknowledged``, as Consul's does.

How a job runs (Consul's protocol, so ``consul exec`` and cairn agents mix):

1. a session named ``Remote Exec`` (behaviour ``delete``, TTL 15 s, renewed every 5 s while the
   job runs) on the agent the verb talks to;
2. the job spec ``{"Command": "<args joined>", "Wait": <ns>}`` (``{"Args": [...]}`` with
   ``-shell=false``; ``{"Script": ...}`` read from stdin when the command is ``-``) written to
   ``<prefix>/<session>/job`` holding the session's lock (prefix ``_rexec``);
3. after ``-wait-repl`` (time for the servers to replicate it), the user event ``_rexec`` with
   ``{"Prefix", "Session"}`` and the ``-node``, ``-service`` and ``-tag`` filters (regular
   expressions, as for ``cairn event``);
4. blocking reads of ``<prefix>/<session>/`` print what the agents write: ``ack`` (with
   ``-verbose``), output chunks as ``    <node>: <line>``, ``exit`` as ``==> <node>: finished
   with exit code N``. When nothing new arrives for ``-wait`` (agents write an empty chunk every
   ``-wait`` while a command is silent), the verb prints ``N / M node(s) completed /
   acknowledged``, deletes the job's keys and destroys the session.

Exit code 0, or 2 when a node's command failed or a node acknowledged and never finished; 1 for
usage errors and failures to talk to the agent. Ctrl-C ends the job the same way (keys deleted,
session destroyed); the commands already started keep running on their nodes.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from appliance.cli.event import add_filter_flags
from appliance.cli.flags import CliError, CliParser, UsageError, command, out
from appliance.cli.http_client import ApiError, HTTPClient, add_http_flags, client_from_args
from appliance.cli.watch import add_true_flag, rewrite_true_flag
from appliance.config.durations import DurationError, parse_duration

USAGE = "cairn exec [options] [-|command...]"
DESCRIPTION = """\
  Evaluates a command on remote nodes. Nodes can be filtered by name, service,
  and tag. This command will wait until no further responses are received for
  the -wait duration. Remote execution must be enabled on the agents
  (disable_remote_exec = false): it is off by default."""

SESSION_TTL = "15s"  # Consul's rExecTTL
RENEW_EVERY_S = 5.0
EVENT_NAME = "_rexec"
_KEY = re.compile(r"(?P<node>[^/]+)/(?:(?P<ack>ack)|(?P<exit>exit)|out/(?P<num>[0-9a-f]+))$")


def build_parser() -> CliParser:
    p = CliParser("cairn exec", USAGE, DESCRIPTION)
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    add_filter_flags(g)
    g.add_argument("-prefix", "--prefix", dest="prefix", default="_rexec", metavar="<value>",
                   help="Prefix in the KV store to use for request data. Defaults to \"_rexec\".")
    add_true_flag(g, "shell", "Use a shell to run the command. Defaults to true.")
    g.add_argument("-wait", "--wait", dest="wait", default="2s", metavar="<duration>",
                   help="Period to wait with no responses before terminating execution. Defaults to 2s.")
    g.add_argument("-wait-repl", "--wait-repl", dest="wait_repl", default="200ms", metavar="<duration>",
                   help="Period to wait for replication before firing the event. Defaults to 200ms.")
    g.add_argument("-verbose", "--verbose", dest="verbose", action="store_true",
                   help="Enables verbose output.")
    return p


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise UsageError(f"Invalid {flag} value: {exc}") from None


def job_spec(args: list[str], shell: bool, wait_s: float, stdin: bytes | None) -> dict[str, Any]:
    """Consul's rExecSpec: Command (shell), Args (no shell) or Script (stdin), and Wait in ns."""
    spec: dict[str, Any] = {}
    if stdin is not None:
        spec["Script"] = base64.b64encode(stdin).decode("ascii")
    elif shell:
        spec["Command"] = " ".join(args)
    else:
        spec["Args"] = list(args)
    spec["Wait"] = int(wait_s * 1e9)
    return spec


class Job:
    """One remote exec job: its session, its keys, what the agents wrote so far."""

    def __init__(self, client: HTTPClient, prefix: str, verbose: bool) -> None:
        self.client = client
        self.prefix = prefix.strip("/")
        self.verbose = verbose
        self.session = ""
        self.seen: set[str] = set()
        self.acks: set[str] = set()
        self.exits: dict[str, int] = {}
        self._stop = threading.Event()

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.session}/"

    def start(self, spec: dict[str, Any]) -> None:
        try:
            body = json.dumps({"Name": "Remote Exec", "Behavior": "delete", "TTL": SESSION_TTL}).encode()
            self.session = self.client.put("/v1/session/create", body=body).json()["ID"]
        except ApiError as exc:
            raise CliError(f"Failed to create session: {exc}") from None
        threading.Thread(target=self._renew, daemon=True).start()
        key = self.base + "job"
        try:
            ok = self.client.put("/v1/kv/" + quote(key), {"acquire": self.session},
                                 body=json.dumps(spec).encode()).json()
        except ApiError as exc:
            raise CliError(f"Failed to upload payload: {exc}") from None
        if ok is not True:
            raise CliError(f"Failed to upload payload: failed to acquire key {key}")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                self.client.put("/v1/session/renew/" + self.session)
            except Exception:  # noqa: BLE001 - the next period retries; the TTL has slack
                continue

    def fire(self, node: str, service: str, tag: str) -> str:
        payload = json.dumps({"Prefix": self.prefix, "Session": self.session}).encode()
        params = [(k, v) for k, v in (("node", node), ("service", service), ("tag", tag)) if v]
        try:
            event = self.client.put("/v1/event/fire/" + EVENT_NAME, params, body=payload).json()
        except ApiError as exc:
            raise CliError(f"Failed to fire event: {exc}") from None
        return str(event["ID"])

    def _entries(self, index: int, wait_s: float) -> tuple[list[dict[str, Any]], int]:
        params = {"recurse": "", "index": str(index), "wait": f"{max(1, int(wait_s * 1000))}ms"}
        resp = self.client.get("/v1/kv/" + quote(self.base), params, allow_404=True, timeout=wait_s + 30)
        new_index = int(resp.headers.get("X-Consul-Index", index) or index)
        return (resp.json() if resp.status == 200 else []), new_index

    def events(self, entries: list[dict[str, Any]]) -> Iterator[str]:
        """The lines to print for the keys not seen before: per node, its ack, its output chunks,
        then its exit code (a reply may bring them all at once)."""
        found = []
        for entry in entries:
            key = entry["Key"]
            if key in self.seen or not key.startswith(self.base):
                continue
            self.seen.add(key)
            m = _KEY.match(key[len(self.base):])
            if m is not None:
                found.append((m["node"], 0 if m["ack"] else 2 if m["exit"] else 1, key, m, entry))
        for node, _, _, m, entry in sorted(found, key=lambda f: f[:3]):
            value = base64.b64decode(entry["Value"]) if entry.get("Value") else b""
            if m["ack"]:
                self.acks.add(node)
                if self.verbose:
                    yield f"    Node {node}: acknowledged"
            elif m["exit"]:
                try:
                    self.exits[node] = int(value.decode() or "0")
                except ValueError:
                    self.exits[node] = 255
                yield f"==> {node}: finished with exit code {self.exits[node]}"
            elif value:
                text = value.decode("utf-8", "replace")
                for line in text.removesuffix("\n").split("\n"):
                    yield f"    {node}: {line}"

    def wait(self, quiet_s: float) -> None:
        """Print what arrives until nothing new has for `quiet_s` seconds."""
        index, deadline = 0, time.monotonic() + quiet_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                entries, new_index = self._entries(index, remaining)
            except ApiError as exc:
                raise CliError(f"Failed to read job output: {exc}") from None
            if new_index < index:
                new_index = 0
            before = len(self.seen)
            for line in self.events(entries):
                out(line)
            sys.stdout.flush()
            if len(self.seen) > before:
                deadline = time.monotonic() + quiet_s
            index = new_index

    def destroy(self) -> None:
        self._stop.set()
        if not self.session:
            return
        try:
            self.client.delete("/v1/kv/" + quote(self.base), {"recurse": ""})
            self.client.put("/v1/session/destroy/" + self.session)
        except Exception as exc:  # noqa: BLE001 - the session's TTL cleans up what is left
            print(f"Failed to clean up the job: {exc}", file=sys.stderr)


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse(rewrite_true_flag(parser, argv, "shell"))
    wait_s = _duration(args.wait, "-wait")
    repl_s = _duration(args.wait_repl, "-wait-repl")
    if not args.args:
        raise UsageError("Must specify a command to execute")
    if args.tag and not args.service:
        raise UsageError("Cannot provide tag filter without service filter.")
    stdin = sys.stdin.buffer.read() if args.args == ["-"] else None
    client = client_from_args(args)
    try:
        client.get_json("/v1/agent/self")
    except ApiError as exc:
        raise CliError(f"Error querying Consul agent: {exc}") from None
    job = Job(client, args.prefix, args.verbose)
    started = time.monotonic()
    try:  # Ctrl-C is exit code 130 (flags.command), after the clean-up here
        job.start(job_spec(args.args, args.shell, wait_s, stdin))
        time.sleep(repl_s)
        event_id = job.fire(args.node, args.service, args.tag)
        if args.verbose:
            out(f"Fired remote execution event. ID: {event_id}")
        job.wait(wait_s)
    finally:
        job.destroy()
    out(f"{len(job.exits)} / {len(job.acks)} node(s) completed / acknowledged")
    if args.verbose:
        out(f"Completed in {time.monotonic() - started:0.2f} seconds")
    bad = any(code != 0 for code in job.exits.values()) or len(job.exits) < len(job.acks)
    return 2 if bad else 0
