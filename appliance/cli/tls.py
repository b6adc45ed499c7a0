"""``cairn tls ca create`` and ``cairn tls cert create``: the agent CA and its certificates.

Consul's flags, defaults, file names and output lines (appliance/tls/certs.py builds the
certificates; this module reads the CA and writes the files into the current directory):

* ``ca create [-days=1825] [-domain=consul] [-name-constraint] [-additional-name-constraint=<name>]
  [-common-name=<cn>] [-cluster-id=<id>]``
  writes ``<domain>-agent-ca.pem`` and ``<domain>-agent-ca-key.pem`` (mode 0600); an existing
  file is an error (``<file> already exists.``).
* ``cert create -server|-client|-cli [-dc=dc1] [-domain=consul] [-days=365] [-node=<name>]
  [-additional-dnsname=<name>]... [-additional-ipaddress=<ip>]... [-ca=<file>] [-key=<file>]``
  writes ``<dc>-<kind>-<domain>-<n>.pem`` and ``...-<n>-key.pem`` (mode 0600) with the first
  free ``n``; ``-server`` first prints Consul's warning about server certificates.
"""

from __future__ import annotations

import ipaddress
import os

from appliance.cli.flags import CliError, CliParser, UsageError, command, expect_args, out, run_subcommand
from appliance.tls import certs

HELP = """\
Usage: cairn tls <subcommand> <subcommand> [options]

  Makes the CA and the certificates agents need for TLS on the HTTPS and
  server RPC ports. docs/tls.md walks through the whole setup.

  Create a CA

    $ cairn tls ca create

  Create a server certificate

    $ cairn tls cert create -server

  Create a client certificate

    $ cairn tls cert create -client

Subcommands:
    ca      Make the agent CA
    cert    Make server, client and cli certificates
"""

CA_HELP = """\
Usage: cairn tls ca <subcommand> [options]

  Makes the CA that signs the agents' certificates.

  Create a CA

    $ cairn tls ca create

Subcommands:
    create    Make a new CA certificate and key
"""

CERT_HELP = """\
Usage: cairn tls cert <subcommand> [options]

  Makes certificates signed by the agent CA.

  Create a server certificate

    $ cairn tls cert create -server

Subcommands:
    create    Make a new certificate and key signed by the CA
"""

SERVER_WARNING = """\
==> WARNING: Server Certificates grants authority to become a
    server and access all state in the cluster including root keys
    and all ACL tokens. Do not distribute them to production hosts
    that are not server nodes. Store them as securely as CA keys."""


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Create `path` (never overwrite) with `mode`, then print Consul's `==> Saved` line."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CliError(f"{path} already exists.") from None
    except OSError as err:
        raise CliError(f"Failed to write {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    out(f"==> Saved {path}")


def _days(value: int) -> int:
    if value <= 0:
        raise UsageError("Please provide a number of days greater than zero")
    return value


def ca_parser() -> CliParser:
    p = CliParser("cairn tls ca create", "cairn tls ca create [options]",
                  "Create a new Cairn CA:\n\n  $ cairn tls ca create\n  ==> Saved consul-agent-ca.pem\n"
                  "  ==> Saved consul-agent-ca-key.pem")
    p.flag("days", type=int, default=certs.CA_DAYS, metavar="<int>",
           help="Days the CA stays valid, counted from now. Default 1825 (5 years).")
    p.flag("domain", default="consul", metavar="<string>",
           help='The cluster\'s DNS domain: the prefix of the file names and, with -name-constraint, a '
                'permitted name. Default "consul".')
    p.flag("name-constraint", action="store_true",
           help="Limit the CA to names under -domain, localhost and each -additional-name-constraint (a critical "
                "X.509 name constraint): certificates it signs for other names fail verification. Default false.")
    p.flag("additional-name-constraint", action="append", default=[], metavar="<string>",
           help="Another domain the CA may sign names under, with -name-constraint. Repeatable.")
    p.flag("common-name", default="", metavar="<string>",
           help='The CA\'s common name. Default "Consul Agent CA <serial number>".')
    p.flag("cluster-id", default="", metavar="<string>",
           help="Adds the URI name spiffe://<cluster-id>.<domain> to the CA. Default none.")
    return p


@command
def run_ca_create(argv: list[str]) -> int:
    args = ca_parser().parse(argv)
    expect_args(args.args, 0, 0)
    days = _days(args.days)
    cert_file, key_file = f"{args.domain}-agent-ca.pem", f"{args.domain}-agent-ca-key.pem"
    for path in (cert_file, key_file):
        if os.path.exists(path):
            raise CliError(f"{path} already exists.")
    issued = certs.make_ca(days=days, domain=args.domain, name_constraint=args.name_constraint,
                           additional_constraints=args.additional_name_constraint, common_name=args.common_name,
                           cluster_id=args.cluster_id)
    _write_new(cert_file, issued.cert_pem, 0o644)
    _write_new(key_file, issued.key_pem, 0o600)
    return 0


def cert_parser() -> CliParser:
    p = CliParser("cairn tls cert create", "cairn tls cert create [options]",
                  "Create a new certificate signed by the agent CA:\n\n  $ cairn tls cert create -server\n"
                  "  ==> Saved dc1-server-consul-0.pem\n  ==> Saved dc1-server-consul-0-key.pem\n"
                  "  $ cairn tls cert create -client\n  ==> Saved dc1-client-consul-0.pem\n"
                  "  ==> Saved dc1-client-consul-0-key.pem")
    p.flag("ca", default="#DOMAIN#-agent-ca.pem", metavar="<string>", help="The CA certificate that signs. "
           "Default #DOMAIN#-agent-ca.pem (#DOMAIN# is -domain).")
    p.flag("key", default="#DOMAIN#-agent-ca-key.pem", metavar="<string>", help="The CA's private key. "
           "Default #DOMAIN#-agent-ca-key.pem.")
    p.flag("server", action="store_true",
           help="Make a server certificate (server.<dc>.<domain>). Give it to servers only.")
    p.flag("client", action="store_true", help="Make a client agent certificate (client.<dc>.<domain>).")
    p.flag("cli", action="store_true", help="Make a certificate for the CLI and other API clients (cli.<dc>.<domain>).")
    p.flag("node", default="", metavar="<string>", help="With -server: also the name "
           "<node>.server.<dc>.<domain>.")
    p.flag("days", type=int, default=certs.LEAF_DAYS, metavar="<int>",
           help="Days the certificate stays valid, counted from now. Default 365.")
    p.flag("dc", default="dc1", metavar="<string>", help="The datacenter, part of the certificate's "
           "names and file name. Default dc1.")
    p.flag("domain", default="consul", metavar="<string>", help='The cluster\'s DNS domain. Default "consul".')
    p.flag("additional-dnsname", action="append", default=[], metavar="<string>",
           help="Another DNS name in the certificate (placed before the built-in ones; localhost is always "
                "there). Repeatable; ignored with -cli.")
    p.flag("additional-ipaddress", action="append", default=[], metavar="<string>",
           help="Another IP address in the certificate (127.0.0.1 is always there). Repeatable; ignored "
                "with -cli.")
    return p


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise CliError(f"Error reading {what}: open {path}: {err.strerror or err}") from None


@command
def run_cert_create(argv: list[str]) -> int:
    args = cert_parser().parse(argv)
    expect_args(args.args, 0, 0)
    kinds = [k for k in certs.KINDS if getattr(args, k)]
    if len(kinds) != 1:
        raise UsageError("Please provide either -server, -client, or -cli")
    kind = kinds[0]
    if args.node and kind != "server":
        raise UsageError("-node requires -server")
    days = _days(args.days)
    for ip in args.additional_ipaddress:
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise UsageError(f"invalid value \"{ip}\" for flag -additional-ipaddress: not an IP address") from None
    ca_path = args.ca.replace("#DOMAIN#", args.domain)
    key_path = args.key.replace("#DOMAIN#", args.domain)
    ca_pem = _read(ca_path, "CA")
    ca_key_pem = _read(key_path, "CA key")
    try:
        ca_cert, ca_key = certs.load_ca(ca_pem, ca_key_pem)
    except certs.CertError as err:
        raise CliError(str(err)) from None
    prefix = certs.file_prefix(kind, args.dc, args.domain)
    n = certs.free_index(prefix, os.path.exists)
    issued = certs.make_leaf(kind, ca_cert, ca_key, days=days, dc=args.dc, domain=args.domain, node=args.node,
                             additional_dns=args.additional_dnsname, additional_ips=args.additional_ipaddress)
    if kind == "server":
        out(SERVER_WARNING)
    out(f"==> Using {ca_path} and {key_path}")
    _write_new(f"{prefix}-{n}.pem", issued.cert_pem, 0o644)
    _write_new(f"{prefix}-{n}-key.pem", issued.key_pem, 0o600)
    return 0


def run_ca(argv: list[str]) -> int:
    return run_subcommand("tls ca", argv, CA_HELP, {"create": run_ca_create})


def run_cert(argv: list[str]) -> int:
    return run_subcommand("tls cert", argv, CERT_HELP, {"create": run_cert_create})


def run(argv: list[str]) -> int:
    return run_subcommand("tls", argv, HELP, {"ca": run_ca, "cert": run_cert})
