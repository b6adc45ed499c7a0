"""Go's encoding/json rules for request bodies (appliance.api.gojson) and Consul's structs.

Expected texts are Go's own (encoding/json UnmarshalTypeError, Go 1.20+: innermost struct, full
field path), as Consul answers them after `Request decode failed: `.
"""

from __future__ import annotations

import pytest

from appliance.api.gojson import ANY, DURATION, INT, STRING, DecodeError, Int, List, Map, Struct, decode
from appliance.api.structs import (
    CHECK_DEFINITION,
    COORDINATE_UPDATE,
    DEREGISTER_REQUEST,
    REGISTER_REQUEST,
    SERVICE_DEFINITION,
)


@pytest.mark.parametrize(("body", "text"), [
    ({"Node": 123, "Address": "1.2.3.4"},
     "json: cannot unmarshal number into Go struct field RegisterRequest.Node of type string"),
    ({"Node": True}, "json: cannot unmarshal bool into Go struct field RegisterRequest.Node of type string"),
    ({"Node": "n", "Address": 123},
     "json: cannot unmarshal number into Go struct field RegisterRequest.Address of type string"),
    ({"Node": "n", "TaggedAddresses": "x"},
     "json: cannot unmarshal string into Go struct field RegisterRequest.TaggedAddresses of type map[string]string"),
    ({"Node": "n", "NodeMeta": {"a": 5}},
     "json: cannot unmarshal number into Go struct field RegisterRequest.NodeMeta of type string"),
    ({"Node": "n", "Check": {"CheckID": ["x"]}},
     "json: cannot unmarshal array into Go struct field HealthCheck.Check.CheckID of type string"),
    ({"Node": "n", "Checks": [{"Status": 1}]},
     "json: cannot unmarshal number into Go struct field HealthCheck.Checks.Status of type string"),
    ({"Node": "n", "Service": {"Port": "80"}},
     "json: cannot unmarshal string into Go struct field NodeService.Service.Port of type int"),
    ({"Node": "n", "Service": {"Port": 1.5}},
     "json: cannot unmarshal number 1.5 into Go struct field NodeService.Service.Port of type int"),
    ({"Node": "n", "Service": {"Tags": ["a", 1]}},
     "json: cannot unmarshal number into Go struct field NodeService.Service.Tags of type string"),
    ({"Node": "n", "Service": "web"},
     "json: cannot unmarshal string into Go struct field RegisterRequest.Service of type structs.NodeService"),
    ({"Node": "n", "Service": {"TaggedAddresses": {"lan": {"Port": "x"}}}},
     "json: cannot unmarshal string into Go struct field ServiceAddress.Service.TaggedAddresses.Port of type int"),
    ({"Node": "n", "SkipNodeUpdate": "yes"},
     "json: cannot unmarshal string into Go struct field RegisterRequest.SkipNodeUpdate of type bool"),
    ([1], "json: cannot unmarshal array into Go value of type structs.RegisterRequest"),
    ("x", "json: cannot unmarshal string into Go value of type structs.RegisterRequest"),
    ({"Nodee": "n"}, 'json: unknown field "Nodee"'),
])
def test_register_request_refusals_name_consuls_struct_and_field(body, text):
    with pytest.raises(DecodeError) as err:
        decode(body, REGISTER_REQUEST)
    assert str(err.value) == text


def test_field_names_fold_case_and_nulls_are_zero_values():
    got = decode({"node": "n", "ADDRESS": "10.0.0.1", "nodemeta": None, "Service": {"service": "web", "port": 80,
                                                                                      "Tags": ["a", None]}},
                 REGISTER_REQUEST)
    assert got == {"Node": "n", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80, "Tags": ["a", ""]}}


def test_raft_indexes_are_accepted_and_dropped():
    """A NodeService read back from the catalog can be sent again (Go decodes its RaftIndex)."""
    got = decode({"Node": "n", "Service": {"Service": "web", "CreateIndex": 5, "ModifyIndex": 6}}, REGISTER_REQUEST)
    assert got["Service"] == {"Service": "web"}


def test_integers_are_range_checked_like_go():
    spec = Struct("x.T", {"A": Int("uint64"), "B": INT, "C": Int("uint8")})
    assert decode({"A": 2**64 - 1, "B": -(2**63), "C": 255}, spec) == {"A": 2**64 - 1, "B": -(2**63), "C": 255}
    for body, value in (({"A": -1}, "number -1"), ({"B": 2**63}, f"number {2**63}"), ({"C": 256}, "number 256"),
                        ({"B": 5.0}, "number 5.0")):
        with pytest.raises(DecodeError, match=f"cannot unmarshal {value} into"):
            decode(body, spec)


def test_durations_take_go_strings_or_nanoseconds():
    assert decode({"Interval": "1m30s", "TTL": 2_000_000_000}, CHECK_DEFINITION) == {"Interval": 90.0, "TTL": 2.0}
    with pytest.raises(DecodeError, match='time: invalid duration "soon"'):
        decode({"Interval": "soon"}, CHECK_DEFINITION)
    with pytest.raises(DecodeError, match="cannot unmarshal bool into Go struct field CheckDefinition.TTL"):
        decode({"TTL": True}, CHECK_DEFINITION)
    assert DURATION.go_type == "time.Duration"


def test_snake_case_and_aliases_on_agent_definitions():
    got = decode({"name": "web", "enable_tag_override": True, "check": {"args": ["true"], "interval": "10s",
                                                                       "check_id": "c"}}, SERVICE_DEFINITION)
    assert got == {"Name": "web", "EnableTagOverride": True,
                   "Check": {"ScriptArgs": ["true"], "Interval": 10.0, "ID": "c"}}


def test_lists_and_maps_of_structs():
    spec = Struct("x.T", {"L": List(Struct("x.E", {"N": STRING})), "M": Map(List(STRING)), "A": ANY})
    got = decode({"L": [{"N": "a"}, None], "M": {"k": ["v"], "z": None}, "A": {"free": [1]}}, spec)
    assert got == {"L": [{"N": "a"}, {}], "M": {"k": ["v"], "z": None}, "A": {"free": [1]}}
    first, second = decode({"L": [None, None]}, spec)["L"]
    assert first == second == {} and first is not second  # zero structs are fresh


def test_other_request_structs():
    assert decode({"Node": "n", "ServiceID": "s"}, DEREGISTER_REQUEST) == {"Node": "n", "ServiceID": "s"}
    with pytest.raises(DecodeError, match="Go struct field DeregisterRequest.Node of type string"):
        decode({"Node": 123}, DEREGISTER_REQUEST)
    with pytest.raises(DecodeError, match=r"Go struct field Coordinate.Coord.Vec of type \[\]float64"):
        decode({"Node": "n", "Coord": {"Vec": "x"}}, COORDINATE_UPDATE)
    assert decode({"Node": "n", "Coord": {"Vec": [1, 2.5]}}, COORDINATE_UPDATE)["Coord"]["Vec"] == [1.0, 2.5]
