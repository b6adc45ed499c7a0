"""Static field schemas: which selectors each endpoint's filter accepts, and their kinds.

The reference implementation derives the selectable fields from the Go type of the result
elements before looking at any data; here each endpoint gets an explicit tree of ``Field``
objects built from the documented field tables.  A ``Field`` has a kind, the JSON key it reads
(equal to the selector name for every endpoint covered) and, for structs, slices of structs and
maps, its sub-fields.  The kind fixes the legal operators (``Field.ops``) and how a literal is
coerced at compile time.  Hidden fields (indexes, enterprise metadata, opaque config maps) are
simply absent, so selecting them is the usual "Selector ... is not valid" error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .grammar import EMPTY, EQ, IN, MATCHES, NE, NOT_EMPTY, NOT_IN, NOT_MATCHES

STRING, INT, BOOL, LIST, MAP, STRUCT, SLICE = (
    "string", "int", "bool", "list", "map", "struct", "slice")

ANY = ""  # sub-field key that accepts any map key

_OPS = {
    STRING: (EQ, NE, IN, NOT_IN, MATCHES, NOT_MATCHES),
    INT: (EQ, NE),
    BOOL: (EQ, NE),
    LIST: (IN, NOT_IN, EMPTY, NOT_EMPTY),
    MAP: (EMPTY, NOT_EMPTY, IN, NOT_IN),
    STRUCT: (),
    SLICE: (EMPTY, NOT_EMPTY),
}


@dataclass(frozen=True)
class Field:
    kind: str
    sub: dict[str, Field] = field(default_factory=dict)
    key: str = ""

    @property
    def ops(self) -> tuple[str, ...]:
        return _OPS[self.kind]


S, I, B, L = Field(STRING), Field(INT), Field(BOOL), Field(LIST)  # noqa: E741 - a table's column names


def _struct(**fields: Field) -> Field:
    return Field(STRUCT, {name: Field(f.kind, f.sub, name) for name, f in fields.items()})


def _slice(element: Field) -> Field:
    return Field(SLICE, element.sub)


def _map(value: Field) -> Field:
    return Field(MAP, {ANY: value})


M = _map(S)  # map[string]string
_SERVICE_ADDRESS = _struct(Address=S, Port=I)
MA = _map(_SERVICE_ADDRESS)  # map[string]ServiceAddress
_WEIGHTS = _struct(Passing=I, Warning=I)
_MESH_GATEWAY = _struct(Mode=S)

PROXY = _struct(
    EnvoyExtensions=_slice(_struct(Name=S, Required=B, ConsulVersion=S, EnvoyVersion=S)),
    DestinationServiceName=S,
    DestinationServiceID=S,
    LocalServiceAddress=S,
    LocalServicePort=I,
    LocalServiceSocketPath=S,
    Mode=S,
    Upstreams=_slice(_struct(
        DestinationType=S, DestinationNamespace=S, DestinationPartition=S, DestinationPeer=S,
        DestinationName=S, Datacenter=S, LocalBindAddress=S, LocalBindPort=I,
        LocalBindSocketPath=S, LocalBindSocketMode=S, MeshGateway=_MESH_GATEWAY)),
    MeshGateway=_MESH_GATEWAY,
    Expose=_struct(Checks=B, Paths=_slice(_struct(
        ListenerPort=I, Path=S, LocalPathPort=I, Protocol=S, ParsedFromCheck=B))),
    TransparentProxy=_struct(OutboundListenerPort=I, DialedDirectly=B),
    AccessLogs=_struct(Enabled=B, DisableListenerLogs=B, Type=S, Path=S, JSONFormat=S,
                       TextFormat=S),
)
_CONNECT = _struct(Native=B)

# structs.NodeService / api.AgentService
NODE_SERVICE = _struct(
    Kind=S, ID=S, Service=S, Tags=L, Address=S, TaggedAddresses=MA, Meta=M, Port=I,
    SocketPath=S, Weights=_WEIGHTS, EnableTagOverride=B, Proxy=PROXY, Connect=_CONNECT,
    PeerName=S,
)

# structs.HealthCheck
HEALTH_CHECK = _struct(
    Node=S, CheckID=S, Name=S, Status=S, Notes=S, Output=S, ServiceID=S, ServiceName=S,
    ServiceTags=L, Type=S, Interval=S, Timeout=S, ExposedPort=I, PeerName=S,
)

# structs.Node
NODE = _struct(
    ID=S, Node=S, Address=S, Datacenter=S, Partition=S, PeerName=S, TaggedAddresses=M, Meta=M)

# structs.ServiceNode
SERVICE_NODE = _struct(
    ID=S, Node=S, Address=S, Datacenter=S, TaggedAddresses=M, NodeMeta=M, ServiceKind=S,
    ServiceID=S, ServiceName=S, ServiceTags=L, ServiceAddress=S, ServiceTaggedAddresses=MA,
    ServiceWeights=_WEIGHTS, ServiceMeta=M, ServicePort=I, ServiceSocketPath=S,
    ServiceEnableTagOverride=B, ServiceProxy=PROXY, ServiceConnect=_CONNECT, PeerName=S,
)

# structs.CheckServiceNode
CHECK_SERVICE_NODE = _struct(Node=NODE, Service=NODE_SERVICE, Checks=_slice(HEALTH_CHECK))

# structs.Intention, as the intentions list shows it
INTENTION = _struct(ID=S, Description=S, SourcePeer=S, SourceNS=S, SourceName=S, DestinationNS=S,
                    DestinationName=S, SourceType=S, Action=S, Precedence=I, Meta=M)

ENDPOINTS: dict[str, Field] = {
    "catalog_nodes": NODE,                 # GET /v1/catalog/nodes
    "catalog_service": SERVICE_NODE,       # GET /v1/catalog/service/:s, /catalog/connect/:s
    "catalog_services": SERVICE_NODE,      # GET /v1/catalog/services (instances, pre-aggregation)
    "catalog_node_services": NODE_SERVICE,  # GET /v1/catalog/node-services/:n (Services list)
    "catalog_node": NODE_SERVICE,          # GET /v1/catalog/node/:n (values of Services)
    "health_checks": HEALTH_CHECK,         # /v1/health/node|checks|state
    "agent_checks": HEALTH_CHECK,          # /v1/agent/checks (type checks deferred, see package)
    "health_service": CHECK_SERVICE_NODE,  # /v1/health/service|connect|ingress/:s
    "agent_services": NODE_SERVICE,        # GET /v1/agent/services (values)
    "intentions": INTENTION,               # GET /v1/connect/intentions
}
