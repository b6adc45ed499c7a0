"""Watch keys: the names of what a write changed, and what a blocking read waits on.

The store records, for every applied write, the watch keys it touched with the write's index
(appliance.state.store); the watch hub wakes the reads parked on them (appliance.watch). Every
watch key is built here, so writers and readers cannot disagree on a spelling:

    NODES, SERVICES, CHECKS     the tables (catalog/nodes, catalog/services, health/state)
    node(name)                  anything on that node (catalog/node, health/node)
    service(name)               anything that changes that service's answer: an instance, its
                                checks, its node, the node's checks
    connect(name)               anything that changes /v1/health/connect/<name>: a proxy for the
                                service or a native instance, their checks and nodes
    kv(key)                     a KV key was written or deleted; KV_PREFIX marks them
    KVS, TOMBSTONES             any KV write; any KV delete
    COORDINATES, AUTOPILOT      network coordinates; the autopilot configuration
    SESSIONS                    the sessions table (session/info, node, list)
    PREPARED_QUERIES            the prepared queries table (/v1/query)
    ACL                         ACL tokens, policies, roles, auth methods, binding rules
    CONNECT_CA, CONNECT_LEAF    the CA's configuration and roots; a serial number handed out
    config_kind(kind)           any config entry of a kind; config_entry(kind, name) one entry
    HTTP_STOPPING               not a write: the HTTP server is stopping (parked reads answer now)

Node and service names are case-insensitive (Consul's memdb indexes), so their keys are built
from the lower-cased name. Pure functions, no I/O.
"""

from __future__ import annotations

NODES = "nodes"
SERVICES = "services"
CHECKS = "checks"
KVS = "kvs"
TOMBSTONES = "tombstones"
COORDINATES = "coordinates"
AUTOPILOT = "autopilot"
HTTP_STOPPING = "http:stopping"
SESSIONS = "sessions"
PREPARED_QUERIES = "prepared-queries"
ACL = "acl"
CONNECT_CA = "connect-ca"
CONNECT_LEAF = "connect-leaf"

NODE_PREFIX = "node:"
SERVICE_PREFIX = "svc:"
CONNECT_PREFIX = "connect:"
KV_PREFIX = "kv:"
CONFIG_PREFIX = "config:"


def node(name: str) -> str:
    return NODE_PREFIX + name.lower()


def service(name: str) -> str:
    return SERVICE_PREFIX + name.lower()


def connect(name: str) -> str:
    return CONNECT_PREFIX + name.lower()


def config_kind(kind: str) -> str:
    return CONFIG_PREFIX + kind


def config_entry(kind: str, name: str) -> str:
    return f"{CONFIG_PREFIX}{kind}/{name}"


def kv(key: str) -> str:
    return KV_PREFIX + key


def is_kv(watch_key: str) -> bool:
    return watch_key.startswith(KV_PREFIX)


def kv_key(watch_key: str) -> str:
    """The KV key of a `kv(...)` watch key."""
    return watch_key[len(KV_PREFIX):]
