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

# --- Gossip encryption ---------------------------------------------------------------------
# One key for the whole cluster, made with `cairn keygen`. Keep this file readable by root
# and the cairn group only (mode 0640) when it holds a key.
#encrypt = "<the output of cairn keygen>"

# Metrics for Prometheus at /v1/agent/metrics?format=prometheus. Without the host name in the
# metric names, the alert rules and dashboard in /usr/share/doc/cairn/prometheus work as shipped.
telemetry {
  disable_hostname = true
}
