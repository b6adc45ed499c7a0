"""``cairn watch``: run a command each time a view of the cluster's data changes.

The flags become a watch definition (``type``, ``key``, ``prefix``, ``service``, ``tag``,
``passingonly``, ``state``, ``name``, ``datacenter``, ``token``, ``stale``) checked by the same
parser as the agent's ``watches`` block (appliance/watches/plan.py), with Consul's texts. The
agent is asked for its name first (``Error querying Consul agent: ...`` when it does not
answer). Then:

* no command: the first answer is printed as JSON indented by four spaces, and the verb exits 0;
* a command: it runs (``$SHELL -c`` with the arguments joined by spaces, or directly with
  ``-shell=false``) once at the start and once per real change, with the data as JSON on stdin,
  ``CONSUL_INDEX`` in its environment, and stdout and stderr inherited. A command that fails
  ends the watch with exit code 1 (``Error executing handler: exit status 3``). SIGINT or
  SIGTERM is passed on to a running command and ends the watch with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from appliance.cli.flags import CliParser, UsageError, command, err
from appliance.cli.format import parse_go_bool
from appliance.cli.http_client import add_http_flags, config_from_args
from appliance.watches.client import AgentClient, ApiFailure, Unreachable
from appliance.watches.handlers import exit_text, shell_argv
from appliance.watches.plan import Plan, WatchError, encode, parse
from appliance.watches.runner import StopWatch, run_plan

USAGE = "cairn watch [options] [child...]"
DESCRIPTION = """\
  Watches for changes in a given data view from the cluster. If a child process
  is specified, it will be invoked with the latest results on changes. Otherwise,
  the latest values are dumped to stdout and the watch terminates.

  Providing the watch type is required, and other parameters may be required
  or supported depending on the watch type."""


def build_parser() -> CliParser:
    p = CliParser("cairn watch", USAGE, DESCRIPTION)
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    g.add_argument("-type", "--type", dest="type", default="", metavar="<string>",
                   help="Specifies the watch type. One of key, keyprefix, services, nodes, service, "
                   "checks, or event.")
    g.add_argument("-key", "--key", dest="key", default="", metavar="<string>",
                   help="Specifies the key to watch. Only for 'key' type.")
    g.add_argument("-prefix", "--prefix", dest="prefix", default="", metavar="<string>",
                   help="Specifies the key prefix to watch. Only for 'keyprefix' type.")
    g.add_argument("-service", "--service", dest="service", default="", metavar="<string>",
                   help="Specifies the service to watch. Required for 'service' type, optional for "
                   "'checks' type.")
    g.add_argument("-tag", "--tag", dest="tag", action="append", default=[], metavar="<string>",
                   help="Specifies the service tag(s) to filter on (repeatable). Optional for "
                   "'service' and 'checks' type.")
    g.add_argument("-passingonly", "--passingonly", dest="passingonly", default="", metavar="<[true|false]>",
                   help="Specifies if only hosts passing all checks are displayed. Optional for "
                   "'service' type. Defaults false.")
    g.add_argument("-state", "--state", dest="state", default="", metavar="<string>",
                   help="Specifies the states to watch. Optional for 'checks' type.")
    g.add_argument("-name", "--name", dest="name", default="", metavar="<string>",
                   help="Specifies an event name to watch. Only for 'event' type.")
    add_true_flag(g, "shell", "Use a shell to run the command (the SHELL environment variable picks it). "
                  "Default true.")
    return p


def add_true_flag(group: Any, name: str, help_text: str) -> None:
    """A boolean flag that defaults to true, as Go's: ``-name=false`` turns it off."""
    group.add_argument(f"-{name}", f"--{name}", dest=name, action="store_true", default=True, help=help_text)
    group.add_argument(f"-{name}-false", dest=name, action="store_false", help=argparse.SUPPRESS)


def rewrite_true_flag(parser: CliParser, argv: list[str], name: str) -> list[str]:
    """``-name=false`` before the first positional becomes the hidden ``-name-false``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--" or tok == "-" or not tok.startswith("-"):
            return out + argv[i:]
        flag, eq, value = tok.partition("=")
        i += 1
        if flag in (f"-{name}", f"--{name}") and eq:
            try:
                out.append(f"-{name}" if parse_go_bool(value) else f"-{name}-false")
            except ValueError:
                out.append(tok)  # the parser reports it
            continue
        out.append(tok)
        action = parser._action_for(tok)
        if action is not None and action.nargs != 0 and not eq and i < len(argv):
            out.append(argv[i])
            i += 1
    return out


def watch_params(args: Any, token: str) -> dict[str, Any]:
    """The flags as a watch definition, with only the keys that were given."""
    params: dict[str, Any] = {"type": args.type}
    if args.datacenter:
        params["datacenter"] = args.datacenter
    if token:
        params["token"] = token
    for name in ("key", "prefix", "service"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.tag:
        params["tag"] = args.tag if len(args.tag) > 1 else args.tag[0]
    if args.stale:
        params["stale"] = True
    for name in ("state", "name"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.passingonly:
        try:
            params["passingonly"] = parse_go_bool(args.passingonly)
        except ValueError:
            raise UsageError("Failed to parse passingonly flag: strconv.ParseBool: parsing "
                             f'"{args.passingonly}": invalid syntax') from None
    return params


class ChildHandler:
    """Runs the command for each change; remembers a failure (exit code 1) and the running child."""

    def __init__(self, child: list[str], shell: bool) -> None:
        self.argv = shell_argv(" ".join(child)) if shell else child
        self.proc: asyncio.subprocess.Process | None = None
        self.code = 0

    async def __call__(self, index: int, data: Any) -> None:
        env = dict(os.environ, CONSUL_INDEX=str(index))
        try:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            err(f"Error starting handler: {exc.strerror or exc}")
            self.code = 1
            raise StopWatch from None
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(encode(data).encode() + b"\n")
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.proc.stdin.close()
        code = await self.proc.wait()
        self.proc = None
        if code != 0:
            err(f"Error executing handler: {exit_text(code)}")
            self.code = 1
            raise StopWatch

    def forward(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


async def _print_first(index: int, data: Any) -> None:
    sys.stdout.write(encode(data, indent="    ") + "\n")
    raise StopWatch


def agent_client(args: Any) -> AgentClient:
    """The asyncio client at the address, with the token, of the HTTP flags."""
    http = config_from_args(args)
    return AgentClient(http.base_url, token=http.token, datacenter=http.datacenter, verify_tls=http.verify_tls)


async def agent_answers(api: AgentClient) -> bool:
    """Ask the agent for itself first, as Consul's commands do; False (and the error printed)
    when it does not answer."""
    try:
        (await api.get("/v1/agent/self")).ok()
    except (Unreachable, ApiFailure) as exc:
        err(f"Error querying Consul agent: {exc}")
        return False
    return True


async def _watch(args: Any, params: dict[str, Any]) -> int:
    plan = Plan(parse(params))
    async with agent_client(args) as api:
        if not await agent_answers(api):
            return 1
        child = ChildHandler(args.args, args.shell) if args.args else None
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()

        def on_signal(sig: int) -> None:
            if child is not None:
                child.forward(sig)
            stopped.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        watching = asyncio.ensure_future(run_plan(plan, api, child or _print_first))
        stop = asyncio.ensure_future(stopped.wait())
        await asyncio.wait((watching, stop), return_when=asyncio.FIRST_COMPLETED)
        for task in (watching, stop):
            task.cancel()
        await asyncio.gather(watching, stop, return_exceptions=True)
        if stopped.is_set():
            return 0
        watching.result()
        return child.code if child is not None else 0


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse(rewrite_true_flag(parser, argv, "shell"))
    if not args.type:
        err("Watch type must be specified")
        err("")
        err(parser.format_help())
        return 1
    http = config_from_args(args)
    params = watch_params(args, http.token)
    try:
        parse(params)
    except WatchError as exc:
        err(str(exc))
        return 1
    return asyncio.run(_watch(args, params))
