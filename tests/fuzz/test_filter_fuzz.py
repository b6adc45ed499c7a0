"""Hostile `filter=` expressions into the filter parser, the schema checks and the evaluator.

Declared outcomes (appliance/filter): `compile_filter` returns a `Filter` or raises `FilterError`
(Consul's text; the HTTP layer answers it); `Filter.matches` answers a bool for every object an
endpoint emits, or `FilterError` for a deferred schema error (agent_checks). Never another
exception, never a hang: deep nesting, long selectors and costly regular expressions included.
Inputs: random bytes, byte mutations and token-level mutations of real expressions.
"""

from __future__ import annotations

from appliance.filter import FilterError, compile_filter
from tests.fuzz.harness import Target, as_text, from_text, fuzz_tests, seed_tests

SERVICE = {"ID": "redis1", "Service": "redis", "Tags": ["primary", "production"],
           "Meta": {"env": "production", "foo": "bar"}, "Port": 1234, "Address": "",
           "TaggedAddresses": {"lan": {"Address": "127.0.0.1", "Port": 8000}},
           "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Datacenter": "dc1",
           "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}, "odd"]}}
CHECK = {"Node": "node-1", "CheckID": "svc-web-health", "Name": "web", "Status": "warning", "Notes": "",
         "Output": "took 15ms", "ServiceID": "", "ServiceName": "web", "ServiceTags": [], "Type": "http"}
NODE = {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar", "Address": "10.1.10.12",
        "Datacenter": "dc1", "TaggedAddresses": {"lan": "10.1.10.12"}, "Meta": {"instance_type": "t2.medium"}}
OBJECTS = {
    "agent_services": [SERVICE, {}, {"Tags": None, "Meta": None}],
    "agent_checks": [CHECK, {}],
    "health_checks": [CHECK, {"ServiceTags": None}],
    "catalog_nodes": [NODE, {"Meta": {"": ""}}],
    "health_service": [{"Node": NODE, "Service": SERVICE, "Checks": [CHECK]}, {}],
}
EXPRESSIONS = [
    'Service == "redis" and "primary" in Tags and Meta.env != qa',
    "Port > 1000 or not (Tags is empty) and Weights.Passing == 1",
    'Meta["foo"] matches "^b.r$" and TaggedAddresses.lan.Port == 8000',
    "Proxy.Upstreams.DestinationName == db and Proxy.Upstreams.LocalBindPort != 0",
    'Status == warning and ServiceName contains "we" and Output not matches "(a|b)*c"',
    "Node.Meta.instance_type == `t2.medium` and Checks.Status == passing and Service.Tags is not empty",
    "Address in Meta or ID not in Tags",
]
WORDS = ["and", "or", "not", "==", "!=", "in", "not in", "contains", "matches", "is empty", "is not empty", "(",
         ")", '"', "`", "\\", ".", "Tags", "Meta", "Port", "Service", "Node", "Checks", "Proxy", "Upstreams",
         "[", "]", "99999999999999999999", "-1", "0x10", "true", "(a*)*$", "\\p{L}", "a{1000}", "[[:alpha:]]"]


def _filter(data: bytes) -> None:
    text = as_text(data)
    for endpoint, objects in OBJECTS.items():
        try:
            found = compile_filter(text, endpoint)
        except FilterError:
            continue
        for obj in objects:
            try:
                assert found.matches(obj) in (True, False)
            except FilterError:
                assert endpoint == "agent_checks"


TARGETS = [Target("filter", _filter, (), [from_text(e) for e in EXPRESSIONS], text=True, words=WORDS)]

test_filter_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_filter_seeds_are_valid = seed_tests(TARGETS)
