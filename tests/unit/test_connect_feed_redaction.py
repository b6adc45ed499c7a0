"""What the replica feed sends client agents holds no Connect CA private key (appliance/rpc/feed.py),
and a client's FSM applying the redacted entries reaches the server's CA state, keys aside: the
same roots, configuration, serials and indexes, through a bootstrap, a TTL change and rotations
to a generated and to an operator-supplied key."""

from __future__ import annotations

from typing import Any

from appliance.connect import authority, ca
from appliance.rpc.feed import client_snapshot, redact_entry
from appliance.state.commands import encode_command
from appliance.state.fsm import FSM
from appliance.state.snapshot import restore
from appliance.state.store import Store

CLUSTER = "11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000.0


def _without_keys(store: Store) -> dict[str, Any]:
    doc = store.connect.dump()
    doc.pop("keys")
    conf = doc["ca_config"]
    doc["ca_config"] = conf and {**conf, "Config": {k: v for k, v in conf["Config"].items() if k != "PrivateKey"}}
    return doc


def test_a_client_applying_the_redacted_ca_entries_has_the_servers_roots_without_keys():
    server, client = Store(), Store()
    server_fsm, client_fsm = FSM(server), FSM(client)
    operator_key = ca.key_pem(ca.generate_key("ec", 256))
    steps = [
        lambda: {"Type": "connect_ca", "Op": "serial"},
        lambda: authority.bootstrap({}, CLUSTER, 1, NOW, "aaaaaaaa"),
        lambda: authority.bootstrap({}, CLUSTER, 1, NOW, "bbbbbbbb"),  # a CA is stored: not applied
        lambda: authority.update(server.connect, "consul", {"LeafCertTTL": "24h"}, False, (2, 3), NOW, "cccccccc"),
        lambda: authority.update(server.connect, "consul", {"PrivateKeyBits": 384}, False, (4, 5), NOW, "dddddddd"),
        lambda: authority.update(server.connect, "consul", {"PrivateKey": operator_key}, False, (6, 7), NOW,
                                 "eeeeeeee"),
        lambda: {"Type": "connect_ca", "Op": "prune", "IDs": [server.connect.roots[0]["ID"]]},
    ]
    keys: set[str] = {operator_key}
    for index, step in enumerate(steps, start=1):
        cmd = step()
        assert cmd is not None
        data = encode_command(cmd)
        server_result = server_fsm.apply_entry(index, data).result
        keys |= set(server.connect.keys.values())
        sent = redact_entry(server.acl, index, data)
        assert sent is not None and b"PRIVATE KEY" not in sent, cmd
        client_result = client_fsm.apply_entry(index, sent).result
        assert server_result == client_result, cmd
        assert client.connect.keys == {}
        assert _without_keys(client) == _without_keys(server), cmd
        assert client.last_index == server.last_index and client.watch_index == server.watch_index
    assert len(keys) == 3 and len(client.connect.roots) == 2  # two generated, one given; the first root pruned
    assert client.connect.active_root()["SigningKeyID"] == server.connect.active_root()["SigningKeyID"]
    # a client that starts from a snapshot instead has the same state
    data = client_snapshot(server)
    assert b"PRIVATE KEY" not in data
    assert restore(data).connect.dump() == client.connect.dump()
    assert server.connect.keys and server.connect.ca_config["Config"]["PrivateKey"] == operator_key  # untouched
