"""``cairn dns``: configuration snippets that send the cairn domain to the agent's DNS server.

``cairn dns dnsmasq-config`` prints a dnsmasq drop-in (the file packaging ships as
/etc/dnsmasq.d/10-cairn): forward lookups of the domain to the agent, and commented
``rev-server`` lines for the private and special-use blocks (RFC 1918, 5735, 6598) whose reverse
lookups the agent can answer. ``cairn dns resolved-config`` prints the systemd-resolved
equivalent. Both take the domain, port and address from flags, so a non-default ``domain`` or
``ports.dns`` gets a matching snippet; neither talks to the agent.
"""

from __future__ import annotations

import sys

from appliance.cli.flags import CliParser, UsageError, command, expect_args

# Blocks from RFC 1918, 5735 and 6598, in the order the dnsmasq snippet lists them.
REVERSE_BLOCKS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.1/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

SUBCOMMANDS = {
    "dnsmasq-config": "Prints a dnsmasq drop-in that forwards the domain to the agent",
    "resolved-config": "Prints a systemd-resolved drop-in that routes the domain to the agent",
}

DESCRIPTION = """\
Prints configuration that makes the host's resolver ask the cairn agent for
names under its domain, so that plain `dig web.service.consul` works.

  cairn dns dnsmasq-config > /etc/dnsmasq.d/10-cairn
  cairn dns resolved-config > /etc/systemd/resolved.conf.d/cairn.conf

Subcommands:
""" + "\n".join(f"    {name.ljust(18)}{text}" for name, text in SUBCOMMANDS.items())


def dnsmasq_config(domain: str = "consul", addr: str = "127.0.0.1", port: int = 8600) -> str:
    """The dnsmasq drop-in: forward the domain, and (commented) reverse zones."""
    domain = domain.strip().strip(".")
    target = f"{addr}#{port}"
    lines = [
        f"# cairn: names under .{domain} are answered by the cairn agent's DNS server.",
        f"server=/{domain}/{target}",
        "",
        "# Reverse (PTR) lookups for private and special-use address blocks",
        "# (RFC 1918, RFC 5735, RFC 6598). Remove the # of each block whose",
        "# addresses your nodes and services use:",
    ]
    lines += [f"#rev-server={block},{target}" for block in REVERSE_BLOCKS]
    return "\n".join(lines) + "\n"


def resolved_config(domain: str = "consul", addr: str = "127.0.0.1", port: int = 8600) -> str:
    """The systemd-resolved drop-in (systemd 246 or newer takes a port in DNS=)."""
    domain = domain.strip().strip(".")
    host = f"[{addr}]" if ":" in addr else addr
    return (
        f"# cairn: route names under .{domain} to the cairn agent's DNS server\n"
        f"# (systemd 246 or newer; older versions take no port in DNS=).\n"
        f"[Resolve]\nDNS={host}:{port}\nDNSSEC=false\nDomains=~{domain}\n"
    )


def build_parser() -> CliParser:
    p = CliParser("cairn dns", "cairn dns <subcommand> [options]", DESCRIPTION)
    g = p.add_argument_group("Command Options")
    g.add_argument("-domain", "--domain", dest="domain", default="consul", metavar="<domain>",
                   help='The DNS domain the agent answers (its "domain" setting). Default "consul".')
    g.add_argument("-dns-port", "--dns-port", dest="dns_port", default=8600, type=int, metavar="<port>",
                   help="The agent's DNS port (ports.dns). Default 8600.")
    g.add_argument("-dns-addr", "--dns-addr", dest="dns_addr", default="127.0.0.1", metavar="<address>",
                   help='The address the agent\'s DNS server listens on. Default "127.0.0.1".')
    return p


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    if not argv or argv[0] in ("-h", "-help", "--help"):
        parser.print_help(sys.stdout if argv else sys.stderr)
        return 0 if argv else 1
    sub, rest = argv[0], argv[1:]
    if sub not in SUBCOMMANDS:
        raise UsageError(f"Unknown subcommand: {sub}\nRun 'cairn dns -h' for usage.")
    args = parser.parse(rest)
    expect_args(args.args, 0, 0)
    if not 0 < args.dns_port < 65536:
        raise UsageError(f"Invalid -dns-port: {args.dns_port}")
    if not args.domain.strip().strip("."):
        raise UsageError("-domain must not be empty")
    make = dnsmasq_config if sub == "dnsmasq-config" else resolved_config
    sys.stdout.write(make(args.domain, args.dns_addr, args.dns_port))
    return 0
