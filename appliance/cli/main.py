"""The ``cairn`` command: picks the verb and hands it the rest of the command line.

Each verb lives in its own module and is imported only when it runs, so ``cairn kv get``
does not pay for loading the agent. A verb is ``run(argv) -> exit code``; ``main`` exits
with that code.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

# verb -> (module, function, one-line description); sorted on output
VERBS: dict[str, tuple[str, str, str]] = {
    "acl": ("appliance.cli.acl", "run", "Interacts with the ACL system (tokens, policies, roles, auth methods)"),
    "agent": ("appliance.cli.agent", "run", "Runs a cairn agent"),
    "catalog": ("appliance.cli.catalog", "run", "Reads the catalog of nodes and services"),
    "config": ("appliance.cli.config_entry", "run", "Writes, reads, lists and deletes config entries (service mesh)"),
    "connect": ("appliance.cli.connect", "run", "Interacts with the service mesh (Connect): CA and built-in proxy"),
    "dns": ("appliance.cli.dns", "run", "Prints resolver configuration for the DNS interface"),
    "event": ("appliance.cli.event", "run", "Fires a new user event"),
    "exec": ("appliance.cli.exec", "run", "Executes a command on agents (when they allow remote exec)"),
    "force-leave": ("appliance.cli.membership", "run_force_leave",
                    "Forces a member of the cluster to enter the \"left\" state"),
    "intention": ("appliance.cli.intention", "run", "Creates, reads and checks Connect intentions"),
    "info": ("appliance.cli.ops", "run_info", "Prints the agent's internal state for operators"),
    "join": ("appliance.cli.membership", "run_join", "Tells a running agent to join the cluster"),
    "keygen": ("appliance.cli.ops", "run_keygen", "Generates a new gossip encryption key"),
    "keyring": ("appliance.cli.keyring", "run", "Manages gossip layer encryption keys"),
    "kv": ("appliance.cli.kv", "run", "Reads and writes the key/value store"),
    "leave": ("appliance.cli.ops", "run_leave", "Makes the agent leave the cluster and shut down"),
    "lock": ("appliance.cli.lock", "run", "Executes a command holding a lock"),
    "maint": ("appliance.cli.maint", "run", "Controls node or service maintenance mode"),
    "members": ("appliance.cli.members", "run", "Lists the members of the cluster"),
    "monitor": ("appliance.cli.ops", "run_monitor", "Streams the agent's log"),
    "operator": ("appliance.cli.operator", "run", "Provides cluster-level tools for operators (Raft, autopilot)"),
    "reload": ("appliance.cli.ops", "run_reload", "Makes the agent reload its configuration"),
    "rtt": ("appliance.cli.rtt", "run", "Estimates network round trip time between nodes"),
    "services": ("appliance.cli.services", "run", "Registers and deregisters local services"),
    "snapshot": ("appliance.cli.snapshot", "run", "Saves, restores and inspects snapshots of the servers' state"),
    "sd": ("sd.cli", "run", "Writes Prometheus service discovery files from the catalog"),
    "template": ("appliance.cli.template", "run", "Renders files from KV and catalog data (consul-template)"),
    "tls": ("appliance.cli.tls", "run", "Makes the agent CA and TLS certificates"),
    "validate": ("appliance.cli.validate", "run", "Checks configuration files and directories"),
    "version": ("appliance.cli.ops", "run_version", "Prints the cairn version"),
    "watch": ("appliance.cli.watch", "run", "Watches for changes in the cluster's data"),
}


def usage() -> str:
    width = max(len(v) for v in VERBS) + 4
    lines = [
        "Usage: cairn [--version] [--help] <command> [<args>]",
        "",
        "Available commands are:",
    ]
    lines += [f"    {name.ljust(width)}{VERBS[name][2]}" for name in sorted(VERBS)]
    lines.append("")
    lines.append("For help on a command run: cairn <command> -h")
    return "\n".join(lines) + "\n"


def run_verb(verb: str, argv: list[str]) -> int:
    module_name, func_name, _ = VERBS[verb]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        sys.stderr.write(f"Error: the '{verb}' command is not available in this build\n")
        return 1
    return int(getattr(module, func_name)(argv) or 0)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "-help", "--help"):
        stream = sys.stdout if args else sys.stderr
        stream.write(usage())
        sys.exit(0 if args else 1)
    if args[0] in ("-v", "-version", "--version"):
        args = ["version", *args[1:]]
    verb = args[0]
    if verb not in VERBS:
        import difflib

        sys.stderr.write(f"Unknown command: {verb}\n\n")
        near = difflib.get_close_matches(verb, VERBS, n=1, cutoff=0.75)
        if near:  # a typo: name the command, not the whole list
            sys.stderr.write(f"Did you mean this?\n\t{near[0]}\n\nRun 'cairn --help' for the list of commands.\n")
        else:
            sys.stderr.write(usage())
        sys.exit(1)
    try:
        code = run_verb(verb, args[1:])
    except KeyboardInterrupt:
        code = 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`cairn kv get -recurse | head -1`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = code or 1
    sys.exit(code)


if __name__ == "__main__":
    main()
