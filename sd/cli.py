"""`cairn sd file-sd -out FILE [filters]`: keep a Prometheus file_sd file current.

How it works
------------
Prometheus's `file_sd_configs` watch files of target groups, the same JSON as http_sd. This
verb asks the agent's `/v1/sd/prometheus` endpoint (sd.http) for them and writes the answer to
`-out`, then keeps asking with blocking queries (`index=<X-Consul-Index>`, `wait=<-wait>`), so
the file changes within moments of the catalog and no request is made while nothing changes.
The file is replaced atomically: the new content goes to a temporary file in the same
directory, is flushed to disk, then renamed over the old one, so Prometheus never reads half a
file. It is only rewritten when the content changed.

Errors (agent down, HTTP error) are printed and retried with a growing pause (1 s up to 30 s);
the file keeps its last good content meanwhile. An index that goes backwards (agent restarted
with an empty catalog) starts a fresh, non-blocking query. `-once` writes the file once and
exits (for cron or a systemd timer).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from appliance.cli.flags import CliParser, UsageError, command, err, expect_args
from appliance.cli.http_client import ApiError, ConnectError, HTTPClient, add_http_flags, client_from_args
from appliance.config.durations import DurationError, parse_duration

USAGE = "cairn sd file-sd -out=<file> [options]"
DESCRIPTION = """\
Writes the catalog's services as a Prometheus file_sd target file and keeps it current
with blocking queries against the agent's /v1/sd/prometheus endpoint. Each instance is a
target with the same __meta_consul_* labels as Prometheus's consul_sd_configs. The file
is replaced atomically, and only when its content changes."""

PATH = "/v1/sd/prometheus"
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def build_parser() -> CliParser:
    p = CliParser("cairn sd file-sd", USAGE, DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-out", "--out", dest="out", default="", metavar="<file>",
                   help="The file_sd file to write (JSON). Required.")
    g.add_argument("-service", "--service", dest="service", action="append", default=[], metavar="<name>",
                   help="Only this service. Repeat for several. Default: every service.")
    g.add_argument("-tag", "--tag", dest="tag", action="append", default=[], metavar="<tag>",
                   help="Only instances with this tag. Repeat to require several.")
    g.add_argument("-node-meta", "--node-meta", dest="node_meta", action="append", default=[],
                   metavar="<key:value>", help="Only instances on nodes with this metadata. Repeatable.")
    g.add_argument("-passing", "--passing", dest="passing", action="store_true",
                   help="Only instances whose health checks all pass.")
    g.add_argument("-wait", "--wait", dest="wait", default="5m", metavar="<duration>",
                   help="How long each blocking query may wait for a change. Default 5m.")
    g.add_argument("-once", "--once", dest="once", action="store_true",
                   help="Write the file once and exit.")
    return p


def filter_params(args: Any) -> list[tuple[str, str]]:
    params = [("service", s) for s in args.service]
    params += [("tag", t) for t in args.tag]
    params += [("node-meta", m) for m in args.node_meta]
    if args.passing:
        params.append(("passing", "true"))
    return params


class Writer:
    """One blocking-query loop; `step()` is one request (separate for tests)."""

    def __init__(self, client: HTTPClient, out: str, params: list[tuple[str, str]], wait_s: float,
                 log: Callable[[str], None] = err) -> None:
        self.client = client
        self.out = out
        self.params = params
        self.wait_s = wait_s
        self.log = log
        self.index = 0
        self.last: bytes | None = None
        if os.path.exists(out):
            try:
                with open(out, "rb") as fh:
                    self.last = fh.read()
            except OSError:
                self.last = None

    def step(self) -> bool:
        """Fetch once (blocking when an index is known); return True if the file was written."""
        params = list(self.params)
        if self.index > 0:
            params += [("index", str(self.index)), ("wait", f"{int(self.wait_s * 1000)}ms")]
        resp = self.client.get(PATH, params, timeout=self.wait_s + self.wait_s / 16 + 30)
        try:
            new_index = int(resp.headers.get("X-Consul-Index", "0"))
        except ValueError:
            new_index = 0
        self.index = new_index if new_index > self.index else (0 if new_index < self.index else new_index)
        if resp.body != self.last:
            write_atomic(self.out, resp.body)
            self.last = resp.body
            return True
        return False

    def run(self, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
        backoff = MIN_BACKOFF_S
        while True:
            try:
                if self.step():
                    self.log(f"==> Wrote {self.out} (index {self.index})")
                backoff = MIN_BACKOFF_S
                if once:
                    return 0
            except (ConnectError, ApiError) as exc:
                if once:
                    raise
                self.log(f"Error fetching targets, retrying in {backoff:.0f}s: {exc}")
                self.index = 0
                sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except OSError as exc:
                self.log(f"Error writing {self.out}: {exc}")
                if once:
                    return 1
                sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)


@command
def run_file_sd(argv: list[str]) -> int:
    args = build_parser().parse(argv)
    expect_args(args.args, 0, 0)
    if not args.out:
        raise UsageError("Missing required flag: -out")
    try:
        wait_s = parse_duration(args.wait)
    except DurationError:
        raise UsageError(f"Invalid -wait duration: {args.wait!r}") from None
    if wait_s <= 0:
        raise UsageError("-wait must be positive")
    writer = Writer(client_from_args(args), args.out, filter_params(args), wait_s)
    return writer.run(once=args.once)


SUBCOMMANDS = {"file-sd": run_file_sd}


def run(argv: list[str]) -> int:
    """`cairn sd <subcommand>`."""
    if not argv or argv[0] in ("-h", "-help", "--help"):
        stream = sys.stdout if argv else sys.stderr
        stream.write("Usage: cairn sd <subcommand> [options]\n\nSubcommands:\n"
                     "    file-sd    Writes and keeps current a Prometheus file_sd target file\n")
        return 0 if argv else 1
    sub = SUBCOMMANDS.get(argv[0])
    if sub is None:
        sys.stderr.write(f"Unknown subcommand: {argv[0]}\nRun 'cairn sd -h' for usage.\n")
        return 1
    return sub(argv[1:])
