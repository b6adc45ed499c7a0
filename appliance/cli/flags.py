"""Consul-style flag parsing and the error edge shared by every verb.

Consul's commands use Go's flag package, and scripts are written against its rules, which
differ from argparse's defaults. ``CliParser`` bends argparse to them:

* flags have one dash (``-http-addr``); two dashes are accepted too;
* both ``-flag value`` and ``-flag=value``; boolean flags also take ``-flag=true|false``;
* no abbreviations (``-det`` is not ``-detailed``);
* flags end at the first positional argument, as in Go: ``kv put key -5`` stores ``-5``;
* ``-h``, ``-help`` and ``--help`` print the help on stdout;
* a usage error prints one line and the verb exits 1 (argparse would exit 2).

``command`` wraps a verb's ``run(argv)`` so that it always returns an exit code: usage errors,
agent connection failures and HTTP errors become one line on stderr and exit 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from appliance.cli.format import parse_go_bool


class UsageError(Exception):
    """Bad command line; the message is printed as it is and the verb exits 1."""


class CliExit(Exception):
    """Stop the verb with an exit code (help shown, or an error already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class CliError(Exception):
    """A failure whose message is printed as it is on stderr; the verb exits 1."""


class ConnectError(Exception):
    """Nothing answered at the agent's address (message is the whole line to print)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Error connecting to Consul agent: {reason}")
        self.reason = reason


class ApiError(Exception):
    """The agent answered with an error status."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"Unexpected response code: {code} ({body})")
        self.code = code
        self.body = body


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help in Consul's look: ``Usage: ...`` and flags shown as ``-flag=<value>``."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, prefix="Usage: " if prefix is None else prefix)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if action.nargs == 0:
            return name
        return f"{name}={action.metavar or '<value>'}"


class CliParser(argparse.ArgumentParser):
    """argparse with Go flag-package rules (see module docstring)."""

    def __init__(self, prog: str, usage: str, description: str = "") -> None:
        super().__init__(
            prog=prog,
            usage=usage,
            description=description,
            formatter_class=_HelpFormatter,
            add_help=False,
            allow_abbrev=False,
        )
        self._optionals.title = "Options"
        self.add_argument("-h", "-help", "--help", action="help", help="Show this help and exit.")
        # positional arguments are collected as they are; each verb checks their count
        self.add_argument("args", nargs="*", help=argparse.SUPPRESS)

    # -- flag definition ------------------------------------------------------------------

    def flag(self, name: str, **kwargs: Any) -> argparse.Action:
        """Add ``-name`` (and ``--name``); ``dest`` is ``name`` with dashes as underscores."""
        kwargs.setdefault("dest", name.replace("-", "_"))
        return self.add_argument(f"-{name}", f"--{name}", **kwargs)

    # -- parsing --------------------------------------------------------------------------

    def _action_for(self, token: str) -> argparse.Action | None:
        name = token.split("=", 1)[0]
        return self._option_string_actions.get(name)

    def _normalize(self, argv: Sequence[str]) -> list[str]:
        """Rewrite ``-bool=true|false`` and stop flag parsing at the first positional."""
        out: list[str] = []
        i = 0
        args = list(argv)
        while i < len(args):
            tok = args[i]
            if tok == "--":
                out.extend(args[i:])
                return out
            if not tok.startswith("-") or tok == "-":
                out.append("--")
                out.extend(args[i:])
                return out
            action = self._action_for(tok)
            if action is None:
                self.error(f"flag provided but not defined: {tok.split('=', 1)[0]}")
            takes_value = action.nargs != 0
            if "=" in tok and not takes_value:
                name, raw = tok.split("=", 1)
                try:
                    value = parse_go_bool(raw)
                except ValueError:
                    self.error(f'invalid boolean value "{raw}" for {name}: parse error')
                if isinstance(action, argparse._StoreTrueAction):
                    if value:
                        out.append(name)
                elif isinstance(action, argparse._StoreFalseAction):
                    if not value:
                        out.append(name)
                else:
                    out.append(name)
                i += 1
                continue
            out.append(tok)
            if takes_value and "=" not in tok:
                if i + 1 >= len(args):
                    self.error(f"flag needs an argument: {tok}")
                # join flag and value into one token so that a value starting with '-'
                # (such as "-reason -x") is not mistaken for a flag
                out[-1] = f"{tok}={args[i + 1]}"
                i += 2
                continue
            i += 1
        return out

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        return self.parse_args(self._normalize(argv))

    # -- Go-like failure modes ------------------------------------------------------------

    def error(self, message: str) -> NoReturn:
        print(message, file=sys.stderr)
        print(f"Run '{self.prog} -h' for usage.", file=sys.stderr)
        raise CliExit(1)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise CliExit(status)


def command(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """Wrap a verb so it returns an exit code for every outcome and never shows a traceback."""
    @functools.wraps(fn)
    def run(argv: list[str]) -> int:
        try:
            return fn(list(argv))
        except CliExit as exc:
            return exc.code
        except (UsageError, CliError, ConnectError, ApiError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            return 1

    return run


def expect_args(args: Sequence[str], low: int, high: int | None = None) -> None:
    """Consul's argument-count errors."""
    if high is not None and len(args) > high:
        raise UsageError(f"Too many arguments (expected {high}, got {len(args)})")
    if len(args) < low:
        raise UsageError(f"Too few arguments (expected {low}, got {len(args)})")


def out(text: str = "") -> None:
    """One line on stdout."""
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    """One line on stderr."""
    sys.stderr.write(text + "\n")


def run_subcommand(group: str, argv: list[str], help_text: str,
                   subcommands: Mapping[str, Callable[[list[str]], int]]) -> int:
    """`cairn <group> <sub> ...`: pick the subcommand, or print the group's help."""
    if not argv:
        sys.stderr.write(help_text)
        return 1
    if argv[0] in ("-h", "-help", "--help"):
        sys.stdout.write(help_text)
        return 0
    sub = subcommands.get(argv[0])
    if sub is None:
        err(f"Unknown subcommand: {group} {argv[0]}")
        sys.stderr.write(help_text)
        return 1
    return sub(argv[1:])
