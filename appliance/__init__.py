"""cairn: a Consul-compatible service-discovery appliance."""

__version__ = "0.1.0"

# The Consul release whose HTTP API, JSON shapes and CLI output cairn follows. Clients read it from
# node meta `consul-version`, member tag `build` and /v1/agent/self.
CONSUL_COMPAT_VERSION = "1.17.0"
REVISION = "cairn" + __version__.replace(".", "")
