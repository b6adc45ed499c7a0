# cairn agent configuration.
#
# The agent reads every *.hcl and *.json file in /etc/cairn.d in name order and merges them
# (later files win), as `cairn agent -config-dir=/etc/cairn.d` does. Check a change before
# restarting with:
#
#   cairn validate /etc/cairn.d
#
# then `systemctl reload cairn` (services, checks and log level) or `systemctl restart cairn`.
# Extra command-line flags for the agent go in /etc/default/cairn (Debian) or
# /etc/sysconfig/cairn (RHEL), not in this directory.
#
# Out of the box this is a single server that elects itself and answers on the loopback
# interface only: HTTP API on 127.0.0.1:8500, DNS on 127.0.0.1:8600.

# Where the agent keeps its state (node id, registrations made over the API).
# The directory belongs to the cairn system user.
data_dir = "/var/lib/cairn"

# Run as a server, and elect this server leader without waiting for others.
server    = true
bootstrap = true

# The datacenter this agent belongs to.
#datacenter = "dc1"

# The node name; defaults to the host name.
#node_name = "web-01"

# Addresses the HTTP API and DNS server listen on. "0.0.0.0" listens everywhere:
# put a firewall or ACLs in front before you do that.
#client_addr = "127.0.0.1"

# The address other agents use to reach this one, when the host has more than one.
#bind_addr      = "10.0.0.10"
#advertise_addr = "10.0.0.10"

# Log level: trace, debug, info, warn or err.
#log_level = "info"

# The web UI, served under /ui.
#ui_config {
#  enabled = true
#}

# DNS on port 53 needs the CAP_NET_BIND_SERVICE capability: see the comments in the unit,
# `systemctl cat cairn`.
#ports {
#  dns = 8600
#}

# --- A cluster of three servers ------------------------------------------------------------
# Not supported by this release yet (it needs replicated Raft storage); shown so the file is
# ready when it is. On each of the three servers, replace "bootstrap = true" above with:
#
#bootstrap_expect = 3
#retry_join       = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]

# --- A client agent ----------------------------------------------------------------------
# Every host that is not a server runs a client agent: it keeps a replica of the catalog and KV
# streamed from a server, forwards its writes and registers its own services and checks.
# Remove "server = true" and "bootstrap = true" above, then:
#
#server     = false
#retry_join = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
#
# retry_join also takes cloud auto-join strings, for example:
#retry_join = ["provider=aws tag_key=cairn-role tag_value=server"]

# --- Security: gossip encryption, ACLs and TLS -------------------------------------------
# Out of the box anyone who reaches the HTTP API may read and change everything. For a production
# agent, uncomment every line between BEGIN and END below (remove one "#" from each), after:
#
#   - `cairn keygen`: one gossip key for the whole cluster, in "encrypt";
#   - `uuidgen`: the initial management token, on servers only (keep a copy offline; or leave
#     the line out and run `cairn acl bootstrap` once), then give each agent its own token
#     (`cairn acl set-agent-token agent ...`, see the security guide);
#   - `cairn tls ca create` once, then `cairn tls cert create -server -dc dc1` for each server
#     (`-client` for client agents, with their file names below), copied to /etc/cairn.d/tls/.
#
# Keep this file and /etc/cairn.d/tls/*-key.pem readable by root and the cairn group only (mode
# 0640): they hold secrets. The security guide (/usr/share/doc/cairn/security.md, docs/security.md
# in the source) has the hardening checklist and how to turn all this on in a running cluster
# without an outage.
#
# BEGIN security block
#encrypt                 = "<the output of cairn keygen>"
#encrypt_verify_incoming = true
#encrypt_verify_outgoing = true
#
#acl {
#  enabled                  = true
#  default_policy           = "deny"          # what no policy of the token grants is refused
#  down_policy              = "extend-cache"
#  enable_token_persistence = true            # tokens set with set-agent-token survive restarts
#  tokens {
#    initial_management = "<the output of uuidgen>"   # servers only
#  }
#}
#
#tls {
#  defaults {
#    ca_file         = "/etc/cairn.d/tls/consul-agent-ca.pem"
#    cert_file       = "/etc/cairn.d/tls/dc1-server-consul-0.pem"      # client: dc1-client-consul-0.pem
#    key_file        = "/etc/cairn.d/tls/dc1-server-consul-0-key.pem"  # client: dc1-client-consul-0-key.pem
#    verify_incoming = true   # RPC peers must present a certificate from the CA
#    verify_outgoing = true   # this agent dials with TLS and checks the CA
#  }
#  internal_rpc {
#    verify_server_hostname = true   # only server.dc1.consul certificates may act as servers
#  }
#  https {
#    verify_incoming = false   # the CLI and browsers need no client certificate for HTTPS
#  }
#}
#
#ports {
#  https = 8501   # the HTTP API over TLS; "http = -1" as well makes it HTTPS only
#}
# END security block

# Metrics for Prometheus at /v1/agent/metrics?format=prometheus. Without the host name in the
# metric names, the alert rules and dashboard in /usr/share/doc/cairn/prometheus work as shipped.
telemetry {
  disable_hostname = true
}
