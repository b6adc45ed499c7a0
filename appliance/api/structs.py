"""Consul's request structures, as specs for appliance.api.gojson.

One spec per Go type a request body is decoded into, with Consul's field names and Go types
(reference/consul-api.md §4; Consul's agent/structs and api packages). Every handler that reads a
body decodes it against one of these first, so a field of the wrong JSON type is a 400 with Go's
text naming Consul's struct and field, and nothing downstream sees a value of an unexpected type.

Endpoint-level validation (a missing node, a bad status, meta limits) happens after decoding, in
the handler or in appliance.local.definitions, with Consul's texts.
"""

from __future__ import annotations

from appliance.api.gojson import (
    ANY,
    BOOL,
    DURATION,
    FLOAT,
    INT,
    STRING,
    STRING_MAP,
    STRINGS,
    UINT64,
    Int,
    List,
    Map,
    Struct,
)

_RAFT_INDEX = ("CreateIndex", "ModifyIndex")  # structs.RaftIndex: accepted on input, never used
_ENTERPRISE = {"Namespace": STRING, "Partition": STRING}
_LOCALITY = Struct("structs.Locality", {"Region": STRING, "Zone": STRING})

SERVICE_ADDRESS = Struct("structs.ServiceAddress", {"Address": STRING, "Port": INT})
WEIGHTS = Struct("structs.Weights", {"Passing": INT, "Warning": INT})

# structs.HealthCheckDefinition: what a catalog-registered check carries about how it is run.
HEALTH_CHECK_DEFINITION = Struct("structs.HealthCheckDefinition", {
    "HTTP": STRING, "TLSServerName": STRING, "TLSSkipVerify": BOOL, "Header": Map(STRINGS), "Method": STRING,
    "Body": STRING, "DisableRedirects": BOOL, "TCP": STRING, "TCPUseTLS": BOOL, "UDP": STRING, "H2PING": STRING,
    "H2PingUseTLS": BOOL, "Interval": DURATION, "OutputMaxSize": Int("uint32"), "Timeout": DURATION,
    "DeregisterCriticalServiceAfter": DURATION, "ScriptArgs": STRINGS, "DockerContainerID": STRING,
    "Shell": STRING, "GRPC": STRING, "GRPCUseTLS": BOOL, "AliasNode": STRING, "AliasService": STRING,
    "TTL": DURATION, "OSService": STRING,
})

# structs.HealthCheck (catalog register's Check/Checks).
HEALTH_CHECK = Struct("structs.HealthCheck", {
    "Node": STRING, "CheckID": STRING, "Name": STRING, "Status": STRING, "Notes": STRING, "Output": STRING,
    "ServiceID": STRING, "ServiceName": STRING, "ServiceTags": STRINGS, "Type": STRING, "Interval": STRING,
    "Timeout": STRING, "ExposedPort": INT, "Definition": HEALTH_CHECK_DEFINITION, "PeerName": STRING,
    **_ENTERPRISE,
}, ignored=_RAFT_INDEX)

# structs.NodeService (catalog register's Service). Proxy and Connect are Connect's, taken as given.
NODE_SERVICE = Struct("structs.NodeService", {
    "Kind": STRING, "ID": STRING, "Service": STRING, "Tags": STRINGS, "Address": STRING,
    "TaggedAddresses": Map(SERVICE_ADDRESS), "Meta": STRING_MAP, "Port": INT, "SocketPath": STRING,
    "Weights": WEIGHTS, "EnableTagOverride": BOOL, "Proxy": ANY, "Connect": ANY, "PeerName": STRING,
    "Locality": _LOCALITY, **_ENTERPRISE,
}, ignored=_RAFT_INDEX)

REGISTER_REQUEST = Struct("structs.RegisterRequest", {
    "Datacenter": STRING, "ID": STRING, "Node": STRING, "Address": STRING, "TaggedAddresses": STRING_MAP,
    "NodeMeta": STRING_MAP, "Service": NODE_SERVICE, "Check": HEALTH_CHECK, "Checks": List(HEALTH_CHECK),
    "SkipNodeUpdate": BOOL, "Token": STRING, "PeerName": STRING, "Locality": _LOCALITY, **_ENTERPRISE,
})

DEREGISTER_REQUEST = Struct("structs.DeregisterRequest", {
    "Datacenter": STRING, "Node": STRING, "ServiceID": STRING, "CheckID": STRING, "Token": STRING,
    "PeerName": STRING, **_ENTERPRISE,
})

# structs.CheckType / CheckDefinition: an agent check (PUT /v1/agent/check/register, a service's
# Check/Checks, a config file's check). Consul also takes snake_case and a few older spellings.
_CHECK_FIELDS = {
    "ID": STRING, "Name": STRING, "Notes": STRING, "ServiceID": STRING, "ScriptArgs": STRINGS,
    "Interval": DURATION, "Timeout": DURATION, "HTTP": STRING, "Method": STRING, "Header": Map(STRINGS),
    "Body": STRING, "DisableRedirects": BOOL, "TLSServerName": STRING, "TLSSkipVerify": BOOL, "TCP": STRING,
    "TCPUseTLS": BOOL, "UDP": STRING, "TTL": DURATION, "GRPC": STRING, "GRPCUseTLS": BOOL, "H2PING": STRING,
    "H2PingUseTLS": BOOL, "DockerContainerID": STRING, "Shell": STRING, "AliasNode": STRING,
    "AliasService": STRING, "OSService": STRING, "Status": STRING, "DeregisterCriticalServiceAfter": DURATION,
    "SuccessBeforePassing": INT, "FailuresBeforeWarning": INT, "FailuresBeforeCritical": INT,
    "OutputMaxSize": INT, "Token": STRING, "Script": STRING, "Definition": ANY, **_ENTERPRISE,
}
CHECK_DEFINITION = Struct("structs.CheckDefinition", _CHECK_FIELDS, aliases={"args": "ScriptArgs", "checkid": "ID"})

# Connect (reference/connect.md §5.1): a proxy's configuration and a service's Connect block.
MESH_GATEWAY = Struct("structs.MeshGatewayConfig", {"Mode": STRING})
UPSTREAM = Struct("structs.Upstream", {
    "DestinationType": STRING, "DestinationNamespace": STRING, "DestinationPartition": STRING,
    "DestinationPeer": STRING, "DestinationName": STRING, "Datacenter": STRING, "LocalBindAddress": STRING,
    "LocalBindPort": INT, "LocalBindSocketPath": STRING, "LocalBindSocketMode": STRING, "Config": Map(ANY),
    "MeshGateway": MESH_GATEWAY, "CentrallyConfigured": BOOL,
})
EXPOSE_PATH = Struct("structs.ExposePath", {
    "ListenerPort": INT, "Path": STRING, "LocalPathPort": INT, "Protocol": STRING, "ParsedFromCheck": BOOL,
})
EXPOSE = Struct("structs.ExposeConfig", {"Checks": BOOL, "Paths": List(EXPOSE_PATH)})
TRANSPARENT_PROXY = Struct("structs.TransparentProxyConfig", {"OutboundListenerPort": INT, "DialedDirectly": BOOL})
PROXY = Struct("structs.ConnectProxyConfig", {
    "DestinationServiceName": STRING, "DestinationServiceID": STRING, "LocalServiceAddress": STRING,
    "LocalServicePort": INT, "LocalServiceSocketPath": STRING, "Mode": STRING, "Config": Map(ANY),
    "Upstreams": List(UPSTREAM), "MeshGateway": MESH_GATEWAY, "Expose": EXPOSE,
    "TransparentProxy": TRANSPARENT_PROXY, "AccessLogs": ANY, "EnvoyExtensions": ANY,
})
# SidecarService is a whole ServiceDefinition, decoded on its own (appliance.local.mesh)
CONNECT = Struct("structs.ServiceConnect", {"Native": BOOL, "SidecarService": ANY})

SERVICE_DEFINITION = Struct("structs.ServiceDefinition", {
    "Kind": STRING, "ID": STRING, "Name": STRING, "Tags": STRINGS, "Address": STRING,
    "TaggedAddresses": Map(SERVICE_ADDRESS), "Meta": STRING_MAP, "Port": INT, "SocketPath": STRING,
    "Check": CHECK_DEFINITION, "Checks": List(CHECK_DEFINITION), "Weights": WEIGHTS, "Token": STRING,
    "EnableTagOverride": BOOL, "Proxy": PROXY, "Connect": CONNECT, "Locality": _LOCALITY, **_ENTERPRISE,
})

# PUT /v1/agent/check/update/:id (agent's checkUpdate).
CHECK_UPDATE = Struct("agent.checkUpdate", {"Status": STRING, "Output": STRING})

# PUT /v1/coordinate/update (structs.CoordinateUpdateRequest; Coord is coordinate.Coordinate).
COORDINATE = Struct("coordinate.Coordinate", {"Vec": List(FLOAT), "Error": FLOAT, "Adjustment": FLOAT,
                                              "Height": FLOAT})
COORDINATE_UPDATE = Struct("structs.CoordinateUpdateRequest", {
    "Datacenter": STRING, "Node": STRING, "Segment": STRING, "Coord": COORDINATE, "Token": STRING,
    "PeerName": STRING, **_ENTERPRISE,
})

# /v1/operator/keyring (agent's keyringArgs).
KEYRING_REQUEST = Struct("agent.keyringArgs", {"Key": STRING})

# PUT /v1/operator/autopilot/configuration (api.AutopilotConfiguration; durations as strings).
AUTOPILOT_CONFIGURATION = Struct("api.AutopilotConfiguration", {
    "CleanupDeadServers": BOOL, "LastContactThreshold": DURATION, "MaxTrailingLogs": UINT64,
    "MinQuorum": Int("uint"), "ServerStabilizationTime": DURATION, "RedundancyZoneTag": STRING,
    "DisableUpgradeMigration": BOOL, "UpgradeVersionTag": STRING,
}, ignored=_RAFT_INDEX)

# structs.Session (PUT /v1/session/create). LockDelay is a Go duration string or a number of
# nanoseconds (decoded by the handler: a value below 1000 counts in seconds); TTL stays a string.
SERVICE_CHECK = Struct("structs.ServiceCheck", {"ID": STRING, "Namespace": STRING})
SESSION_REQUEST = Struct("structs.Session", {
    "ID": STRING, "Name": STRING, "Node": STRING, "LockDelay": ANY, "Behavior": STRING, "TTL": STRING,
    "NodeChecks": STRINGS, "ServiceChecks": List(SERVICE_CHECK), "Checks": STRINGS, **_ENTERPRISE,
}, ignored=_RAFT_INDEX)

# api.TxnOp (PUT /v1/txn): one of KV, Node, Service, Check. Value is base64 (decoded by the handler).
TXN_KV_OP = Struct("api.KVTxnOp", {
    "Verb": STRING, "Key": STRING, "Value": ANY, "Flags": UINT64, "Index": UINT64, "Session": STRING,
    **_ENTERPRISE,
})
TXN_NODE = Struct("api.Node", {
    "ID": STRING, "Node": STRING, "Address": STRING, "Datacenter": STRING, "TaggedAddresses": STRING_MAP,
    "Meta": STRING_MAP, "CreateIndex": UINT64, "ModifyIndex": UINT64, "PeerName": STRING, **_ENTERPRISE,
})
TXN_OP = Struct("api.TxnOp", {
    "KV": TXN_KV_OP,
    "Node": Struct("api.NodeTxnOp", {"Verb": STRING, "Node": TXN_NODE}),
    "Service": Struct("api.ServiceTxnOp", {"Verb": STRING, "Node": STRING, "Service": ANY}),
    "Check": Struct("api.CheckTxnOp", {"Verb": STRING, "Check": ANY}),
})
