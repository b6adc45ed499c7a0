"""DNS answers: one query packet in, one reply (wire bytes), a drop, or "ask the recursors" out.

How it works
------------
`Answerer.respond(data, store, rng, now, tcp)` parses the packet (appliance.dns.names), decides
what the question asks for and builds the reply from the state store:

* SOA and NS questions for any name under the domain are answered first (SOA: `ns.<domain>`,
  `hostmaster.<domain>`, serial = `now`; NS: up to 3 healthy `consul` server nodes, with glue);
  AXFR/IXFR are NOTIMP.
* node lookups give the node's A/AAAA (a CNAME for a host name) and its meta as RFC 1464 TXT;
  service lookups give the healthy instances: no critical check on the instance or its node
  (maintenance checks are critical), and no warning either with `only_passing`. They are shuffled
  with the `random.Random` passed in, on every build. A/AAAA answers carry the instance address
  (the service's own, else the node's); SRV answers point at `<node>.node.<dc>.<domain>` or
  `<hexip>.addr.<dc>.<domain>` and put the target's A/AAAA (and node meta TXT) in Additional.
* PTR answers come from node addresses, then service addresses.
* a node or service lookup naming another datacenter (`web.service.dc2.consul`) is not answered
  from this store: the reply asks the server to fetch that datacenter's answer (`Reply.remote`),
  and `respond_remote` builds the records from it by the same rules (SRV targets name the other
  datacenter); an unknown datacenter is NXDOMAIN, an unreachable one SERVFAIL. A prepared query
  (`<name>.query[.<dc>].consul`) is run the same way, by the server, and answered from its
  execute response (appliance/dns/query_answers.py): its instances, its DNS TTL; no such query or
  no instance left after failover is NXDOMAIN.
* NXDOMAIN (+SOA) for unknown names, nodes, services and no healthy instance; NOERROR with the SOA
  in Authority when the name exists but has no record of the asked type; REFUSED for names
  outside the domain unless recursors are configured, in which case the reply asks the server to
  forward. Malformed packets are FORMERR/NOTIMP/BADVERS, with the query's ID, whenever the
  12-byte header is readable; only shorter packets and responses (QR set) are dropped (the rule
  is in appliance.dns.names). Any bug in here becomes SERVFAIL rather than an exception. Error
  replies are never cached (`deps` None), so junk cannot crowd out good answers.

A question is compiled once into a plan (appliance/dns/plans.py): its parsed name, and the
records of its answer read from the store, kept while the store's watch keys behind them have
not moved; a reply only shuffles the plan's instances and packs. Every reply is byte for byte
what building it from the store would give, for the same `random.Random` state.

The reply is packed by appliance.dns.answers_wire, which trims it to the UDP size and sets TC.
`Reply.deps` names the state-store watch keys the answer was read from, so the server's wire
cache can tell whether a cached answer is still current; None means "do not cache". Sans-IO:
no sockets, clock or randomness of its own.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from appliance.dns import answers_wire as wire, query_answers
from appliance.dns.answers_wire import QNAME, Rec, labels, rd_a, rd_aaaa, rd_soa, rd_srv, rd_txt
from appliance.dns.names import (
    C_ANY,
    C_IN,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    T_A,
    T_AAAA,
    T_ANY,
    T_AXFR,
    T_CNAME,
    T_IXFR,
    T_MAILA,
    T_MAILB,
    T_NS,
    T_OPT,
    T_PTR,
    T_SOA,
    T_SRV,
    T_TXT,
    BadRequest,
    Lookup,
    NameParser,
    Request,
    header_request,
    ip_to_hex,
    lower_labels,
    parse_ip,
    parse_request,
    rfc1464,
    valid_dns_name,
)
from appliance.dns.plans import FAILED, Choice, Message, Plan, Plans, render
from appliance.state import gateways, watchkeys
from appliance.state.store import Record, Store

MAX_NS = 3
# Questions about another datacenter's names that are still answered here (the zone is ours).
REMOTE_LOCAL_TYPES = frozenset({T_SOA, T_NS, T_AXFR, T_IXFR, T_MAILA, T_MAILB})


def healthy_instances(found: list[Any], tag: str, only_passing: bool) -> list[tuple[Record, Record, str]]:
    """(node, service, "passing"|"warning") from another datacenter's /v1/health/service answer,
    by the same rule as `Answerer._healthy` (no critical check; no warning with only_passing)."""
    out = []
    for csn in found:
        node, svc = csn.get("Node") or {}, csn.get("Service") or {}
        if not node.get("Node") or (tag and tag not in {str(t).lower() for t in svc.get("Tags") or ()}):
            continue
        status = instance_status(csn.get("Checks") or (), only_passing)
        if status:
            out.append((node, svc, status))
    return out


def instance_status(checks: Any, only_passing: bool) -> str:
    """"passing", "warning" (only when warnings are answered) or "" (not answered) for an instance
    from its node's and its own checks."""
    status = "passing"
    for check in checks:
        st = check.get("Status")
        if st == "passing":
            continue
        if st == "warning" and not only_passing:
            status = "warning"
            continue
        return ""
    return status


class Shuffler(Protocol):
    """What answers need of randomness: a `random.Random` (seeded in tests) passed in."""

    def shuffle(self, x: MutableSequence[Any]) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What the answers depend on, taken from RuntimeConfig (see `settings_from_config`)."""

    domain: str = "consul."
    alt_domain: str = ""
    datacenter: str = "dc1"
    node_ttl: int = 0
    service_ttl: dict[str, int] = field(default_factory=dict)
    only_passing: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    enable_truncate: bool = False
    disable_compression: bool = False
    node_meta_txt: bool = True
    recursors: bool = False
    soa: tuple[int, int, int, int] = (3600, 600, 86400, 0)  # refresh, retry, expire, min_ttl


def settings_from_config(cfg: Any) -> Settings:
    d = cfg.dns_config
    soa = dict(getattr(d, "soa", None) or {})
    return Settings(
        domain=cfg.domain, alt_domain=cfg.alt_domain, datacenter=cfg.datacenter,
        node_ttl=int(d.node_ttl_s), service_ttl={k.lower(): int(v) for k, v in d.service_ttl_s.items()},
        only_passing=d.only_passing, udp_answer_limit=d.udp_answer_limit, a_record_limit=d.a_record_limit,
        enable_truncate=d.enable_truncate, disable_compression=d.disable_compression,
        node_meta_txt=getattr(d, "enable_additional_node_meta_txt", True), recursors=bool(cfg.recursors),
        soa=(int(soa.get("refresh", 3600)), int(soa.get("retry", 600)), int(soa.get("expire", 86400)),
             int(soa.get("min_ttl", 0))),
    )  # fmt: skip


@dataclass(slots=True)
class Reply:
    wire: bytes | None  # None: send nothing (dropped, or forwarded)
    rcode: int = NOERROR
    forward: Request | None = None  # set: ask the recursors, answer with theirs
    deps: tuple[str, ...] | None = None  # watch keys read; None = not cacheable
    shuffled: bool = False  # another build may order the records differently
    error: str = ""  # an internal error turned into SERVFAIL (for the log)
    remote: Lookup | None = None  # set: ask the datacenter `remote.dc` (or run the query), then `respond_remote`
    request: Request | None = None  # the parsed question of a remote lookup
    source: str = ""  # the asker's address (set by the server), for a prepared query's Near "_ip"


@lru_cache(maxsize=8192)
def _address(address: str) -> tuple[int, str]:
    """(4 or 6, the address as text) for an IP address, (0, address) for a host name."""
    ip = parse_ip(address)
    return (0, address) if ip is None else (ip.version, str(ip))


class Answerer:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.names = NameParser(settings.domain, settings.alt_domain, settings.datacenter)
        self.dc = settings.datacenter.lower()
        self.plans = Plans()
        self._handlers: dict[str, Callable[[Request, Lookup, Any], Message]] = {
            "node": self._node, "service": self._service, "addr": self._addr, "connect": self._connect,
            "ingress": self._ingress,
        }  # fmt: skip

    # ------------------------------------------------------------------ entry point

    def respond(self, data: bytes, store: Store, rng: Shuffler, now: float, *, tcp: bool = False) -> Reply:
        req: Request | None = None
        try:
            req = parse_request(data)
            return self._respond(req, store, rng, now, tcp)
        except BadRequest as err:
            if err.rcode is None:
                return Reply(None, rcode=-1)
            bare = err.request or header_request(data)
            return Reply(wire.error_reply(bare, err.rcode, self.s.recursors), rcode=err.rcode)
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            bare = req or header_request(data)
            return Reply(wire.error_reply(bare, SERVFAIL, self.s.recursors), rcode=SERVFAIL,
                         error=f"{type(err).__name__}: {err}")

    def _respond(self, req: Request, store: Store, rng: Shuffler, now: float, tcp: bool) -> Reply:
        if req.qclass not in (C_IN, C_ANY):
            return Reply(wire.error_reply(req, NOTIMP, self.s.recursors), rcode=NOTIMP)
        if req.qtype == T_OPT:
            return Reply(wire.error_reply(req, FORMERR, self.s.recursors), rcode=FORMERR)
        key = (req.qname.lower(), req.qtype)
        plan = self.plans.get(key)
        if plan is None:
            plan = Plan(self.names.parse(lower_labels(req.labels), req.qtype))
            self.plans.add(key, plan)
        lookup = plan.lookup
        if lookup.kind == "outside":
            if self.s.recursors:
                return Reply(None, forward=req)
            return Reply(wire.error_reply(req, REFUSED, False), rcode=REFUSED)
        if (lookup.dc or lookup.kind == "query") and lookup.kind in ("node", "service", "query") \
                and req.qtype not in REMOTE_LOCAL_TYPES:
            return Reply(None, remote=lookup, request=req)  # another datacenter's catalog, or a query, answers
        if lookup.kind == "ptr":
            msg = self._ptr(req, lookup, store, now)
            if msg.rcode == NXDOMAIN and self.s.recursors:
                return Reply(None, forward=req)
        elif req.qtype in (T_AXFR, T_IXFR, T_MAILA, T_MAILB):
            return Reply(wire.error_reply(req, NOTIMP, self.s.recursors), rcode=NOTIMP)
        elif req.qtype == T_SOA:
            msg = Message(deps=(watchkeys.service("consul"),))
            msg.groups.append(wire.Group(self._soa(lookup.domain, now)))
            ns, glue, shuffled = self._ns(lookup.domain, store, rng)
            msg.authority, msg.additional, msg.shuffled = ns, glue, shuffled
        elif req.qtype == T_NS:
            ns, glue, shuffled = self._ns(lookup.domain, store, rng)
            msg = Message(deps=(watchkeys.service("consul"),), shuffled=shuffled, additional=glue)
            msg.groups = [wire.Group(r) for r in ns]
            if not ns:
                msg.authority.append(self._soa(lookup.domain, now))
        else:
            handler = self._handlers.get(lookup.kind)
            if handler is None:
                msg = Message(NXDOMAIN)
            elif store.__class__ is Store:  # the store itself (not an ACL view): compile once, reuse
                msg = self.plans.current(plan, store) or self.plans.compiled(plan, handler(req, lookup, store), store)
            else:
                msg = handler(req, lookup, store)
        return self._pack(req, lookup, msg, rng, now, tcp)

    def _pack(self, req: Request, lookup: Lookup, msg: Message, rng: Shuffler, now: float, tcp: bool) -> Reply:
        groups, shuffled = render(msg, rng)
        authority = msg.authority
        if (msg.rcode != NOERROR or not groups) and not authority:
            authority = [self._soa(lookup.domain or self.names.domain, now)]
        packed = wire.pack_reply(req, msg.rcode, groups, authority, msg.additional, tcp=tcp, settings=self.s)
        return Reply(packed, rcode=msg.rcode, deps=msg.deps, shuffled=shuffled)

    def respond_remote(self, req: Request, lookup: Lookup, found: Any, rng: Shuffler, now: float, *,
                       tcp: bool = False, failed: str = "") -> Reply:
        """The reply to a lookup of another datacenter, from what that datacenter answered: for a
        service its `/v1/health/service/<name>` list, for a node its `/v1/catalog/node/<name>`
        object (None: no such node). `failed`: "no-path" (an unknown datacenter: NXDOMAIN, as
        Consul) or another error text (SERVFAIL). Never cached (`deps` None)."""
        try:
            if failed:
                rcode = NXDOMAIN if failed == "no-path" else SERVFAIL
                if rcode == SERVFAIL:
                    return Reply(wire.error_reply(req, SERVFAIL, self.s.recursors), rcode=SERVFAIL)
                msg = Message(NXDOMAIN, deps=None)
            elif lookup.kind == "service":
                instances = healthy_instances(found or [], lookup.tag, self.s.only_passing)
                msg = self._service_answer(lookup, instances, lookup.dc, qtype=req.qtype)
            elif lookup.kind == "query":  # an execute response (appliance/dns/query_answers.py), None: no query
                msg = Message(NXDOMAIN) if not found else self._service_answer(
                    lookup, query_answers.instances(found), query_answers.datacenter(found, self.dc), qtype=req.qtype,
                    ttl=query_answers.ttl(found, self.service_ttl(str(found.get("Service") or ""))), ordered=True)
            else:
                node = found.get("Node") if isinstance(found, dict) else None
                msg = self._node_answer(req, node)
            msg.deps = None
            return self._pack(req, lookup, msg, rng, now, tcp)
        except Exception as err:  # noqa: BLE001 - a remote answer we cannot use is SERVFAIL, not a crash
            return Reply(wire.error_reply(req, SERVFAIL, self.s.recursors), rcode=SERVFAIL,
                         error=f"{type(err).__name__}: {err}")

    # ------------------------------------------------------------------ names and TTLs

    def _node_fqdn(self, node: str, domain: str, dc: str = "") -> str:
        return f"{node.lower()}.node.{dc or self.dc}.{domain}"

    def service_ttl(self, service: str) -> int:
        table = self.s.service_ttl
        if not table:
            return 0
        service = service.lower()
        if service in table:
            return table[service]
        best, best_len = None, -1
        for key, ttl in table.items():
            if key.endswith("*") and service.startswith(key[:-1]) and len(key) > best_len:
                best, best_len = ttl, len(key)
        return best if best is not None else table.get("*", 0)

    def _soa(self, domain: str, now: float) -> Rec:
        refresh, retry, expire, min_ttl = self.s.soa
        serial = int(now) & 0xFFFFFFFF
        rdata = rd_soa(f"ns.{domain}", f"hostmaster.{domain}", (serial, refresh, retry, expire, min_ttl))
        return Rec(domain, T_SOA, min_ttl, rdata)

    def _ns(self, domain: str, store: Store, rng: Shuffler) -> tuple[list[Rec], list[wire.Extra], bool]:
        servers = [(n, s) for n, s, _ in self._healthy(store, "consul", "") if valid_dns_name(n["Node"])]
        rng.shuffle(servers)
        ns, glue = [], []
        for node, _svc in servers[:MAX_NS]:
            target = self._node_fqdn(node["Node"], domain)
            ns.append(Rec(domain, T_NS, self.s.node_ttl, (labels(target),)))
            glue.extend(self._address_records(target, node["Address"], T_ANY, self.s.node_ttl))
        return ns, glue, len(servers) > 1

    # ------------------------------------------------------------------ records

    @staticmethod
    def _address_records(owner: Any, address: str, qtype: int, ttl: int) -> list[wire.Extra]:
        """A/AAAA for an IP (of the asked family; ANY/TXT give either), a CNAME for a host name.
        `owner` QNAME: the question's name, as asked."""
        version, text = _address(address)
        if not version:
            if not address:
                return []
            return [wire.Extra(("cname", owner, address), Rec(owner, T_CNAME, ttl, (labels(address),)))]
        if version == 4 and qtype in (T_A, T_ANY, T_TXT, T_SRV):
            return [wire.Extra(("a", owner, text), Rec(owner, T_A, ttl, rd_a(text)))]
        if version == 6 and qtype in (T_AAAA, T_ANY, T_TXT, T_SRV):
            return [wire.Extra(("aaaa", owner, text), Rec(owner, T_AAAA, ttl, rd_aaaa(text)))]
        return []

    def _meta_txt(self, owner: Any, node: Record, ttl: int) -> list[wire.Extra]:
        out = []
        for key, value in sorted((node.get("Meta") or {}).items()):
            text = rfc1464(str(key), str(value)).encode()
            chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [b""]
            out.append(wire.Extra(("txt", owner, key), Rec(owner, T_TXT, ttl, rd_txt(chunks))))
        return out

    def _healthy(self, store: Store, service: str, tag: str, *, connect: bool = False
                 ) -> list[tuple[Record, Record, str]]:
        """(node, service, "passing"|"warning") of instances DNS may hand out (Consul's filter);
        with `connect`, of the service's proxies and Connect-native instances."""
        only_passing = self.s.only_passing
        out = []
        for node, svc in store.connect_instances(service) if connect else store.service_instances(service):
            if tag and tag not in {t.lower() for t in svc.get("Tags") or ()}:
                continue
            status = instance_status(store.instance_checks(node, svc), only_passing)
            if status:
                out.append((node, svc, status))
        return out

    # ------------------------------------------------------------------ lookups (compiled into plans)

    def _node(self, req: Request, lk: Lookup, store: Store) -> Message:
        msg = self._node_answer(req, store.node(lk.name))
        msg.deps = (watchkeys.node(lk.name),)
        return msg

    def _node_answer(self, req: Request, node: Record | None) -> Message:
        msg = Message()
        if not node:
            msg.rcode = NXDOMAIN
            return msg
        ttl = self.s.node_ttl
        qtype = req.qtype
        if qtype in (T_A, T_AAAA, T_ANY):
            for extra in self._address_records(QNAME, node["Address"], qtype, ttl):
                msg.groups.append(wire.Group(extra.rr))
        if qtype in (T_TXT, T_ANY):
            msg.groups.extend(wire.Group(e.rr) for e in self._meta_txt(QNAME, node, ttl))
        elif msg.groups and self.s.node_meta_txt:
            msg.additional.extend(self._meta_txt(QNAME, node, ttl))
        return msg

    def _addr(self, req: Request, lk: Lookup, store: Store) -> Message:
        records = self._address_records(QNAME, lk.ip, T_ANY, self.s.node_ttl)
        msg = Message(deps=())
        ip = parse_ip(lk.ip)
        if req.qtype in (T_ANY, T_AAAA if ip and ip.version == 6 else T_A):
            msg.groups = [wire.Group(e.rr) for e in records]
        else:
            msg.additional = records
        return msg

    def _service(self, req: Request, lk: Lookup, store: Store) -> Message:
        msg = self._service_answer(lk, self._healthy(store, lk.name, lk.tag), "", qtype=req.qtype)
        msg.deps = (watchkeys.service(lk.name),)
        return msg

    def _connect(self, req: Request, lk: Lookup, store: Store) -> Message:
        """`<service>.connect.<domain>`: where to reach the service over Connect (its proxies)."""
        msg = self._service_answer(lk, self._healthy(store, lk.name, "", connect=True), "", qtype=req.qtype)
        msg.deps = (watchkeys.connect(lk.name),)
        return msg

    def _ingress(self, req: Request, lk: Lookup, store: Store) -> Message:
        """`<service>.ingress.<domain>`: the healthy ingress gateways exposing the service."""
        only_passing = self.s.only_passing
        found = []
        for node, svc in gateways.ingress_instances(store, lk.name):
            status = instance_status(store.instance_checks(node, svc), only_passing)
            if status:
                found.append((node, svc, status))
        msg = self._service_answer(lk, found, "", qtype=req.qtype)
        msg.deps = gateways.ingress_keys(store, lk.name)
        return msg

    def _service_answer(self, lk: Lookup, instances: list[tuple[Record, Record, str]], dc: str, *, qtype: int,
                        ttl: int | None = None, ordered: bool = False) -> Message:
        """Records for the healthy instances of a service ("" dc: this datacenter), one list of
        (dedup key, group) choices per instance, rendered per reply (appliance/dns/plans.py);
        `ttl` None: the service's TTL rule; `ordered`: keep their order (a prepared query
        shuffled or sorted them by `Near` already)."""
        choices: list[list[Choice]] = []
        msg = Message(instances=choices, ordered=ordered)
        if not instances:
            msg.rcode = NXDOMAIN
            return msg
        ttl = self.service_ttl(lk.name) if ttl is None else ttl
        if qtype == T_SRV:
            for node, svc, status in instances:
                key = (node["Node"], svc.get("Address") or node["Address"], svc.get("Port", 0))
                try:
                    choices.append([(key, self._srv(lk.domain, node, svc, status, ttl, dc))])
                except Exception as err:  # noqa: BLE001 - fails the replies that reach it (plans.render)
                    choices.append([(key, err)])
        elif qtype in (T_A, T_AAAA, T_ANY, T_TXT):
            msg.limit = self.s.a_record_limit
            for node, svc, _ in instances:
                address = svc.get("Address") or node["Address"]
                try:
                    records = self._address_records(QNAME, address, qtype, ttl)
                    choices.append([(extra.key[2], wire.Group(extra.rr)) for extra in records])
                except Exception as err:  # noqa: BLE001 - fails the replies that reach it (plans.render)
                    choices.append([(FAILED, err)])
        else:
            choices.extend([] for _ in instances)  # shuffled all the same, as before
        return msg.seal()

    def _srv(self, domain: str, node: Record, svc: Record, status: str, ttl: int, dc: str = "") -> wire.Group:
        weights = svc.get("Weights") or {}
        weight = int(weights.get("Warning" if status == "warning" else "Passing", 1) or 0)
        node_name = self._node_fqdn(node["Node"], domain, dc)
        extras: list[wire.Extra] = []
        own = svc.get("Address") or ""
        if not own:
            target = node_name
            extras = self._address_records(target, node["Address"], T_SRV, ttl)
        elif parse_ip(own) is not None:
            target = f"{ip_to_hex(own)}.addr.{dc or self.dc}.{domain}"
            extras = self._address_records(target, own, T_SRV, ttl)
        else:
            target = own if own.endswith(".") else own + "."
        if self.s.node_meta_txt:
            extras.extend(self._meta_txt(node_name, node, ttl))
        port = max(0, min(int(svc.get("Port") or 0), 65535))
        rr = Rec(QNAME, T_SRV, ttl, rd_srv(max(0, min(weight, 65535)), port, target))
        return wire.Group(rr, extras)

    def _ptr(self, req: Request, lk: Lookup, store: Store, now: float) -> Message:
        msg = Message(deps=(watchkeys.NODES, watchkeys.SERVICES))
        ip = parse_ip(lk.ip)
        names: list[str] = []
        for node in store.all_nodes():
            addresses = [node["Address"], *(node.get("TaggedAddresses") or {}).values()]
            if any(parse_ip(str(a)) == ip for a in addresses if a):
                names.append(self._node_fqdn(node["Node"], self.names.domain))
        if not names:
            for service, svcs in store.service_names().items():
                if any(parse_ip(s.get("Address") or "") == ip for s in svcs):
                    names.append(f"{service.lower()}.service.{self.dc}.{self.names.domain}")
        if not names:
            msg.rcode = NXDOMAIN
        elif req.qtype in (T_PTR, T_ANY):
            ttl = self.s.node_ttl
            msg.groups = [wire.Group(Rec(QNAME, T_PTR, ttl, (labels(n),))) for n in dict.fromkeys(names)]
        return msg
