"""What the replica feed sends client agents holds no token secret (appliance/rpc/feed.py), and a
client's FSM applying the redacted entries reaches exactly the server's state, secrets aside: the
same tokens, indexes and refusals, whatever a write's outcome on the server."""

from __future__ import annotations

import uuid

from appliance.acl.builtin import ANONYMOUS_ID, GLOBAL_MANAGEMENT_ID
from appliance.rpc.feed import client_snapshot, redact_entry, redacted_tables
from appliance.state.commands import encode_command
from appliance.state.fsm import FSM
from appliance.state.snapshot import restore
from appliance.state.store import Store

A, B, C = (str(uuid.UUID(int=n)) for n in (101, 102, 103))
SA, SB = str(uuid.uuid4()), str(uuid.uuid4())
INITIAL = str(uuid.uuid4())


def token(accessor: str, secret: str, **more: object) -> dict:
    return {"AccessorID": accessor, "SecretID": secret, "Description": "", "Local": False,
            "CreateTime": "2026-01-01T00:00:00Z", **more}


def acl(op: str, obj: dict | None = None, **more: object) -> dict:
    return {"Type": "acl", "Op": op, **({"Object": obj} if obj is not None else {}), **more}


STEPS = [
    acl("init", token(str(uuid.UUID(int=99)), INITIAL, Policies=[{"ID": GLOBAL_MANAGEMENT_ID}])),
    acl("init", token(str(uuid.UUID(int=98)), INITIAL)),  # the initial token is there: skipped
    acl("token_set", token(A, SA), Create=True),
    acl("token_set", token(B, SA), Create=True),  # secret in use: refused
    acl("token_set", token(B, A), Create=True),  # a secret that is another token's accessor: refused
    acl("token_set", token(C, SB), Create=True),
    acl("token_set", token(A, SA, Description="edited")),
    acl("token_set", token(A, SB)),  # changing a secret: refused
    acl("token_set", token(A, str(uuid.uuid4()))),  # changing a secret: refused
    acl("token_set", token(B, str(uuid.uuid4()))),  # no such token: refused
    acl("token_set", token(ANONYMOUS_ID, "anonymous", Description="anon edited")),
    acl("token_set", token(B, "anonymous"), Create=True),  # the anonymous secret: refused
    acl("token_delete", ID=C),
    acl("token_set", token(C, SB), Create=True),  # the freed secret, again
    {"Type": "kv_set", "Key": "k", "Value": b"SecretID", "Flags": 0},  # not an ACL write
    acl("bootstrap", token(str(uuid.UUID(int=97)), str(uuid.uuid4()))),  # bootstrapped already: refused
]


def test_a_client_applying_the_redacted_entries_has_the_servers_state_without_secrets():
    server, client = Store(), Store()
    server_fsm, client_fsm = FSM(server), FSM(client)
    secrets = {INITIAL, SA, SB}
    for index, cmd in enumerate(STEPS, start=1):
        data = encode_command(cmd)
        server_result = server_fsm.apply_entry(index, data).result
        sent = redact_entry(server.acl, index, data)
        assert sent is not None and not any(s.encode() in sent for s in secrets), cmd
        client_result = client_fsm.apply_entry(index, sent).result
        assert isinstance(server_result, Exception) == isinstance(client_result, Exception), (cmd, server_result)
        assert client.acl == redacted_tables(server.acl), cmd
        assert client.last_index == server.last_index and client.watch_index == server.watch_index
    assert client.acl.tokens[A]["Description"] == "edited" and client.acl.tokens[A]["SecretID"] == A
    assert client.acl.tokens[ANONYMOUS_ID]["SecretID"] == "anonymous"
    assert not secrets & set(client.acl.secrets)
    assert client.kv["k"]["Value"] == b"SecretID"
    # a client that starts from a snapshot instead has the same state
    data = client_snapshot(server)
    assert not any(s.encode() in data for s in secrets)
    assert restore(data).acl == client.acl
    assert server.acl.tokens[A]["SecretID"] == SA  # the server's own tables are untouched
