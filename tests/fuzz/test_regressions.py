"""Inputs the decoder fuzzers found that broke a decoder's contract, kept as plain tests.

Each one raised something its decoder does not declare (or would have killed a caller); the fix
is in the decoder, and the test pins the declared outcome.
"""

from __future__ import annotations

import msgpack
import pytest

from appliance.events import EventError, UserEventRecord


def test_a_user_event_whose_id_is_not_hex_is_refused_at_decode() -> None:
    # 36 characters but not a UUID: /v1/event/list reads its index from the hex and answered 500
    data = msgpack.packb({"ID": "\x00" * 36, "n": "deploy", "v": 1}, use_bin_type=True)
    with pytest.raises(EventError, match="bad ID"):
        UserEventRecord.decode(data)
    for bad in ("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "0b5b3c8e-2f6c-4e1d-9a8b-7c6d5e4f3a2\u0661"):
        with pytest.raises(EventError, match="bad ID"):
            UserEventRecord.decode(msgpack.packb({"ID": bad, "n": "x"}, use_bin_type=True))
    ok = UserEventRecord.decode(msgpack.packb({"ID": "0B5B3C8E-2f6c-4e1d-9a8b-7c6d5e4f3a21", "n": "x"}))
    assert ok.name == "x"
