"""The process harness of the multi-process tests: `Agent` (one real `cairn agent` process),
`Cluster` (servers and client agents joined into one datacenter) and the loopback helpers they
share (free ports, a tiny HTTP client, `wait_until`)."""

from .agent import Agent
from .cluster import FAST_RAFT, Cluster, one_leader, server_args
from .net import PROJECT_ROOT, free_port, free_ports, http, http_json, wait_until

__all__ = ["FAST_RAFT", "PROJECT_ROOT", "Agent", "Cluster", "free_port", "free_ports", "http", "http_json",
           "one_leader", "server_args", "wait_until"]
