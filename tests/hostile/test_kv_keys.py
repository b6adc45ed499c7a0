"""KV keys that are not UTF-8, against a real agent: three byte strings are three keys, end to end.

Consul (Go) keeps a key's raw bytes: the key is the unescaped URL path after `/v1/kv/` (a Go string
is bytes, url.PathUnescape does not check UTF-8, memdb indexes the bytes), and only the JSON output
replaces each byte that is not UTF-8 with U+FFFD (encoding/json). So `/v1/kv/k%ff`, `/v1/kv/k%fe`
and `/v1/kv/k%ef%bf%bd` name three keys with three values that never overwrite each other, whose
`Key` all read "k\ufffd". They must stay three through writes, reads, blocking reads, listings,
deletes, CAS, a snapshot save and restore, and a server's restart from its WAL.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.harness import FAST_RAFT, Agent, http, wait_until

pytestmark = pytest.mark.timeout(90)

# path -> value; the three keys render alike ("k\ufffd") but are three byte strings
KEYS = {"k%ff": b"value of ff", "k%fe": b"value of fe", "k%ef%bf%bd": b"value of U+FFFD"}
RENDERED = "k\ufffd"


def put(url: str, path: str, value: bytes, query: str = "") -> tuple[int, bytes]:
    status, _, body = http("PUT", f"{url}/v1/kv/{path}{query}", value)
    return status, body


def raw(url: str, path: str) -> bytes | None:
    status, _, body = http("GET", f"{url}/v1/kv/{path}?raw")
    return body if status == 200 else None


def values(url: str) -> dict[str, bytes | None]:
    return {path: raw(url, path) for path in KEYS}


def listing(url: str, query: str) -> tuple[int, list]:
    status, _, body = http("GET", f"{url}/v1/kv/{query}")
    return status, json.loads(body) if status == 200 else []


def write_three(url: str) -> None:
    for path, value in KEYS.items():
        status, body = put(url, path, value)
        assert (status, body.strip()) == (200, b"true"), (path, body)


def test_three_byte_strings_are_three_keys(agent):
    url = agent.url
    write_three(url)
    assert values(url) == KEYS  # none overwrote another

    for path in KEYS:
        status, headers, body = http("GET", f"{url}/v1/kv/{path}")
        assert status == 200, body
        [entry] = json.loads(body)
        assert entry["Key"] == RENDERED  # as Go's encoding/json renders it
        assert entry["Value"] is not None and int(headers["X-Consul-Index"]) == entry["ModifyIndex"]

    status, entries = listing(url, "k?recurse")
    assert status == 200
    assert [e["Key"] for e in entries] == [RENDERED] * 3
    # byte order, as memdb lists them: k\xef\xbf\xbd < k\xfe < k\xff
    assert [base64.b64decode(e["Value"]) for e in entries] == [KEYS["k%ef%bf%bd"], KEYS["k%fe"], KEYS["k%ff"]]
    assert listing(url, "?keys") == (200, [RENDERED] * 3)
    assert listing(url, "k?keys&separator=%ff") == (200, [RENDERED] * 3)  # no key has "\xff" after "k"

    # the same key through either case of its hex digits
    assert raw(url, "k%FF") == KEYS["k%ff"]

    # deletes, one key at a time
    assert http("DELETE", f"{url}/v1/kv/k%fe")[0] == 200
    assert values(url) == {"k%ff": KEYS["k%ff"], "k%fe": None, "k%ef%bf%bd": KEYS["k%ef%bf%bd"]}
    assert listing(url, "?keys") == (200, [RENDERED] * 2)
    assert http("DELETE", f"{url}/v1/kv/k%ef%bf%bd")[0] == 200
    assert values(url) == {"k%ff": KEYS["k%ff"], "k%fe": None, "k%ef%bf%bd": None}
    assert http("DELETE", f"{url}/v1/kv/k%ff")[0] == 200
    assert values(url) == dict.fromkeys(KEYS)
    assert listing(url, "?keys") == (200, [])


def test_cas_and_recursive_delete_see_each_key_alone(agent):
    url = agent.url
    write_three(url)
    index = {path: json.loads(http("GET", f"{url}/v1/kv/{path}")[2])[0]["ModifyIndex"] for path in KEYS}
    assert len(set(index.values())) == 3

    # cas=0 only creates, and k%fe exists although it renders like the others
    assert put(url, "k%fe", b"x", "?cas=0")[1].strip() == b"false"
    assert raw(url, "k%fe") == KEYS["k%fe"]
    # a CAS with another key's index fails; with its own index it succeeds
    assert put(url, "k%fe", b"new fe", f"?cas={index['k%ff']}")[1].strip() == b"false"
    assert put(url, "k%fe", b"new fe", f"?cas={index['k%fe']}")[1].strip() == b"true"
    assert values(url) == {**KEYS, "k%fe": b"new fe"}
    status, _, body = http("DELETE", f"{url}/v1/kv/k%ff?cas={index['k%ef%bf%bd']}")
    assert body.strip() == b"false" and raw(url, "k%ff") == KEYS["k%ff"]

    # a prefix ending in a byte that is not UTF-8 deletes only what starts with it
    assert put(url, "k%ff/child", b"c")[0] == 200
    assert http("DELETE", f"{url}/v1/kv/k%ff?recurse")[0] == 200
    assert values(url) == {"k%ff": None, "k%fe": b"new fe", "k%ef%bf%bd": KEYS["k%ef%bf%bd"]}
    assert raw(url, "k%ff/child") is None


def test_a_blocking_read_of_one_key_ignores_the_others(agent):
    url = agent.url
    write_three(url)
    status, headers, _ = http("GET", f"{url}/v1/kv/k%ff")
    index = int(headers["X-Consul-Index"])
    assert put(url, "k%fe", b"changed")[0] == 200  # another key, rendered the same
    started = time.monotonic()
    status, headers, body = http("GET", f"{url}/v1/kv/k%ff?index={index}&wait=1s")
    assert status == 200 and time.monotonic() - started >= 0.9  # it waited: nothing of its own changed
    assert int(headers["X-Consul-Index"]) == index
    # the answer cached for this query at this index is this key's, not a look-alike's
    assert json.loads(body)[0]["Value"] == "dmFsdWUgb2YgZmY="  # "value of ff"
    assert put(url, "k%ff", b"changed too")[0] == 200
    status, headers, body = http("GET", f"{url}/v1/kv/k%ff?index={index}&wait=5s")
    assert int(headers["X-Consul-Index"]) > index and raw(url, "k%ff") == b"changed too"


def test_names_that_are_not_utf8_are_refused_and_bad_escapes_too(agent):
    url = agent.url
    assert http("GET", f"{url}/v1/catalog/service/web%ff")[0] == 400
    assert http("GET", f"{url}/v1/health/service/web%ff")[0] == 400
    assert http("PUT", f"{url}/v1/event/fire/ev%ff")[0] == 400
    status, _, body = http("PUT", f"{url}/v1/kv/a%zz", b"v")
    assert status == 400 and b"invalid URL escape" in body
    assert http("GET", f"{url}/v1/kv/a%25zz")[0] == 404  # the key "a%zz" is spelt with %25
    assert http("GET", f"{url}/v1/catalog/service/web")[0] == 200  # the agent is fine


def test_long_keys_are_not_capped_by_the_kv_handler(agent):
    url = agent.url
    key = "long/" + "k%ff" * 1500  # a 6 KB key in an 8 KB request line
    assert put(url, key, b"long")[0] == 200
    assert raw(url, key) == b"long"
    status, entries = listing(url, "long/?recurse")
    assert status == 200 and len(entries[0]["Key"]) == 5 + 2 * 1500


def test_the_cli_handles_such_keys(agent):
    key = "cli/k\udcff"  # a key from argv that is not UTF-8 (subprocess sends its bytes)
    result = agent.cli("kv", "put", key, "from cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Success! Data written to: cli/k\ufffd"
    assert raw(agent.url, "cli/k%ff") == b"from cli"
    assert raw(agent.url, "cli/k%ef%bf%bd") is None
    result = agent.cli("kv", "get", key)
    assert (result.returncode, result.stdout) == (0, "from cli\n")
    result = agent.cli("kv", "delete", key)
    assert result.returncode == 0 and raw(agent.url, "cli/k%ff") is None


def test_snapshot_save_and_restore_keeps_three_keys(agent):
    url = agent.url
    write_three(url)
    status, _, archive = http("GET", f"{url}/v1/snapshot")
    assert status == 200, archive
    for path in KEYS:
        assert http("DELETE", f"{url}/v1/kv/{path}")[0] == 200
    assert put(url, "k%ff", b"after the snapshot")[0] == 200
    status, _, body = http("PUT", f"{url}/v1/snapshot", archive)
    assert status == 200, body
    wait_until(lambda: values(url) == KEYS, timeout=10, what="the restored keys")
    assert listing(url, "?keys") == (200, [RENDERED] * 3)


# ------------------------------------------------------------------ a server on disk


def _server(tmp_path: Path) -> Agent:
    return Agent(tmp_path, "solo", "-server", "-bootstrap", "-hcl", FAST_RAFT)


def test_a_server_keeps_three_keys_across_restarts(tmp_path: Path):
    server = _server(tmp_path)
    url = server.url
    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the server elects itself")
        write_three(url)
        assert values(url) == KEYS
    finally:
        server.stop(kill=True)  # no graceful shutdown: the keys come back from the WAL alone

    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the restarted server elects itself")
        assert values(url) == KEYS
        assert listing(url, "?keys") == (200, [RENDERED] * 3)
        # a snapshot restore goes through the log as well: it is replayed after the next restart
        status, _, archive = http("GET", f"{url}/v1/snapshot")
        assert status == 200
        assert http("DELETE", f"{url}/v1/kv/?recurse")[0] == 200
        assert http("PUT", f"{url}/v1/snapshot", archive)[0] == 200
        wait_until(lambda: values(url) == KEYS, timeout=10, what="the restored keys")
        assert put(url, "k%fe", b"written after the restore")[0] == 200
    finally:
        server.stop(kill=True)

    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the server elects itself a third time")
        assert values(url) == {**KEYS, "k%fe": b"written after the restore"}
    finally:
        server.stop()


def test_a_client_agent_forwards_and_replicates_three_keys(tmp_path: Path):
    server = _server(tmp_path)
    server_url = server.url
    client = Agent(tmp_path, "client", join=[server.lan_addr])  # a client agent (server = false)
    url = client.url
    try:
        server.start()
        wait_until(server.leader, timeout=20, what="the server elects itself")
        write_three(server_url)
        client.start()
        wait_until(client.leader, timeout=30, what="the client finds the server")
        wait_until(lambda: values(url) == KEYS, timeout=10, what="the client's replica, from a STREAM snapshot")
        assert listing(url, "?keys") == (200, [RENDERED] * 3)
        for path in KEYS:  # forwarded on the client's replica connection (FORWARD frames) ...
            assert put(url, path, b"via the client " + path.encode())[0] == 200
        changed = {path: b"via the client " + path.encode() for path in KEYS}
        assert values(url) == values(server_url) == changed  # ... and applied back (STREAM entries)
        assert http("DELETE", f"{url}/v1/kv/k%fe")[0] == 200
        assert values(url) == values(server_url) == {**changed, "k%fe": None}
    finally:
        client.stop()
        server.stop()
