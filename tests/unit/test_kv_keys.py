"""KV keys are byte strings, as in Consul: unescaping, rendering, ordering and every serialisation.

A key that is not UTF-8 is held with one lone surrogate per such byte ("surrogateescape"), so
`k%ff`, `k%fe` and `k%ef%bf%bd` are three keys. These tests pin the pieces: the path parameter,
the rendering Go's encoding/json gives (one U+FFFD per undecodable byte), byte order in listings,
snapshots, the server RPC frames and the CLI's URLs.
"""

from __future__ import annotations

import msgpack
import orjson
import pytest

from appliance.cli import kv as cli_kv
from appliance.http.errors import HTTPError
from appliance.http.handlers.kv import PREFIX, byte_order, dir_entry, go_text, key_bytes, list_keys
from appliance.http.paths import path_tail
from appliance.http.values import Request
from appliance.rpc.frames import HEADER, TEXT_ERRORS, encode_frame as frame
from appliance.state.fsm import FSM
from appliance.state.snapshot import foreign_text, restore, snapshot
from appliance.state.store import Store

FF, FE, REPLACEMENT = "k\udcff", "k\udcfe", "k\ufffd"  # k%ff, k%fe, k%ef%bf%bd


def tail(raw: str, *, keep_bytes: bool = True) -> str:
    return path_tail(Request("GET", raw), PREFIX, keep_bytes=keep_bytes)


# ------------------------------------------------------------------ the path parameter


def test_three_byte_strings_are_three_keys():
    keys = [tail("/v1/kv/k%ff"), tail("/v1/kv/k%fe"), tail("/v1/kv/k%ef%bf%bd")]
    assert keys == [FF, FE, REPLACEMENT]
    assert [key_bytes(k) for k in keys] == [b"k\xff", b"k\xfe", b"k\xef\xbf\xbd"]


def test_the_key_is_the_unescaped_path_as_in_go():
    assert tail("/v1/kv/plain/key") == "plain/key"
    assert tail("/v1/kv/a%2Fb") == "a/b"
    assert tail("/v1/kv/k%FF") == tail("/v1/kv/k%ff")  # hex digits of either case
    assert tail("/v1/kv/caf%C3%A9") == "café"
    assert tail("/v1/kv/sp%20ace+plus") == "sp ace+plus"  # a path keeps "+"
    assert tail("/v1/kv/") == ""
    assert tail("/v1/kv/k?recurse=%ff") == "k"  # the query is not the key
    # a truncated sequence is one surrogate per byte, and gives exactly those bytes back
    assert tail("/v1/kv/x%f0%9f%98") == "x\udcf0\udc9f\udc98"
    assert key_bytes(tail("/v1/kv/%ed%a0%80")) == b"\xed\xa0\x80"


@pytest.mark.parametrize("raw", ["/v1/kv/a%zz", "/v1/kv/a%", "/v1/kv/a%f", "/v1/kv/%g0b"])
def test_a_malformed_escape_is_refused_like_gos_url_parser(raw):
    with pytest.raises(HTTPError) as exc:
        tail(raw)
    assert exc.value.status == 400
    assert "invalid URL escape" in exc.value.text


def test_names_that_are_not_utf8_are_refused_not_merged():
    request = Request("GET", "/v1/catalog/service/web%ff")
    with pytest.raises(HTTPError) as exc:
        path_tail(request, "/v1/catalog/service/")
    assert exc.value.status == 400
    assert path_tail(Request("GET", "/v1/catalog/service/web%ef%bf%bd"), "/v1/catalog/service/") == \
        "web\ufffd"
    assert path_tail(Request("GET", "/v1/catalog/service/we%62"), "/v1/catalog/service/") == "web"


# ------------------------------------------------------------------ rendering as Go's encoding/json does


@pytest.mark.parametrize(("raw", "rendered"), [
    (b"k\xff", "k\ufffd"),
    (b"k\xef\xbf\xbd", "k\ufffd"),  # a real U+FFFD is one character
    (b"\xf0\x9f\x98", "\ufffd\ufffd\ufffd"),  # truncated: Go's DecodeRune gives (RuneError, 1) per byte
    (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # an encoded surrogate is not UTF-8
    (b"\xc0\xaf", "\ufffd\ufffd"),  # overlong
    (b"\xf4\x90\x80\x80", "\ufffd" * 4),  # above U+10FFFF
    (b"ok/caf\xc3\xa9", "ok/café"),
    (b"plain", "plain"),
])
def test_go_text_replaces_each_undecodable_byte(raw, rendered):
    assert go_text(raw.decode("utf-8", "surrogateescape")) == rendered


def test_dir_entry_renders_the_key_and_orjson_can_encode_it():
    rec = {"LockIndex": 0, "Key": FF, "Flags": 3, "Value": b"v", "CreateIndex": 5, "ModifyIndex": 6}
    entry = dir_entry(rec)
    assert entry["Key"] == "k\ufffd"
    assert orjson.loads(orjson.dumps([entry]))[0]["Key"] == "k\ufffd"
    assert rec["Key"] == FF  # the stored record keeps its bytes


def test_listings_are_in_byte_order_and_rendered():
    keys = sorted([FF, FE, REPLACEMENT, "k\ue000", "ka", "k\u00e9"])  # the store's code point order
    ordered = byte_order(keys)
    assert [key_bytes(k) for k in ordered] == sorted(key_bytes(k) for k in keys)
    assert list_keys(ordered, "", "") == ["ka", "k\u00e9", "k\ue000", "k\ufffd", "k\ufffd", "k\ufffd"]
    assert byte_order(["a", "b"]) == ["a", "b"]


def test_separator_roll_up_happens_on_the_keys_then_renders():
    keys = byte_order(sorted(["d\udcff/x", "d\udcff/y", "d\udcfe/z", "d/plain"]))
    assert list_keys(keys, "d", "/") == ["d/", "d\ufffd/", "d\ufffd/"]  # two keys, each rendered as Go would


# ------------------------------------------------------------------ the store, snapshots and the wire


def _store_with_three_keys() -> Store:
    store = Store()
    fsm = FSM(store)
    for index, (key, value) in enumerate([(FF, b"ff"), (FE, b"fe"), (REPLACEMENT, b"fffd"), ("gone\udcff", b"x")],
                                         start=1):
        fsm.apply(index, {"Type": "kv_set", "Verb": "set", "Key": key, "Flags": 0, "Value": value})
    fsm.apply(5, {"Type": "kv_delete", "Key": "gone\udcff", "Recurse": False})
    return store


def test_the_store_holds_three_distinct_keys():
    store = _store_with_three_keys()
    assert {k: store.kv[k]["Value"] for k in (FF, FE, REPLACEMENT)} == {FF: b"ff", FE: b"fe", REPLACEMENT: b"fffd"}
    assert store.tombstones == {"gone\udcff": 5}


def test_a_snapshot_round_trips_keys_that_are_not_utf8():
    store = _store_with_three_keys()
    data = snapshot(store)
    back = restore(data)
    assert back.kv == store.kv
    assert back.kv_keys == store.kv_keys
    assert back.tombstones == store.tombstones
    assert back.watch_index == store.watch_index
    assert snapshot(back) == data
    assert foreign_text(back) is None  # KV keys may be bytes


def test_restore_reports_text_that_is_not_utf8_outside_kv_keys():
    store = _store_with_three_keys()
    store.nodes["n\udcff"] = {"Node": "n\udcff", "Address": "10.0.0.1"}
    assert foreign_text(restore(snapshot(store))) == "nodes"
    store = _store_with_three_keys()
    store.kv[FF] = {**store.kv[FF], "Session": "s\udcff"}
    assert foreign_text(restore(snapshot(store))) == "kv"


def test_rpc_frames_carry_keys_as_their_bytes():
    command = {"Type": "kv_set", "Verb": "set", "Key": FF, "Flags": 0, "Value": b"v"}
    data = frame([3, 7, "addr", command])
    body = data[HEADER.size:]
    assert b"k\xff" in body  # the key's own bytes, not an encoding of U+DCFF
    assert msgpack.unpackb(body, raw=False, unicode_errors=TEXT_ERRORS) == [3, 7, "addr", command]


# ------------------------------------------------------------------ the CLI


def test_cli_sends_a_key_from_argv_as_its_bytes():
    argv_key = b"k\xff/x y".decode("utf-8", "surrogateescape")  # how Python hands argv over
    assert cli_kv._kv_path(argv_key) == "/v1/kv/k%FF/x%20y"
    assert cli_kv._kv_path("plain/key") == "/v1/kv/plain/key"
    assert cli_kv.shown(argv_key) == "k\ufffd/x y"
    assert cli_kv.read_data_arg(b"v\xfe".decode("utf-8", "surrogateescape")) == b"v\xfe"
