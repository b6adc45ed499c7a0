"""cairn: a Consul-compatible service-discovery appliance."""

__version__ = "0.1.0"
