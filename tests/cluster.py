"""The former cluster-server helper's signature over the harness's one agent class (tests/harness):
`Server(tmp_path, name, expect, hcl, server)`, `start(join)`, KV `put`/`get`, `stop(sig_kill)`.
Kept only for tests not yet written against `tests.harness.Agent` and `Cluster`; new tests use
those directly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.harness import FAST_RAFT, Agent, server_args


class Server(Agent):
    def __init__(self, tmp_path: Path, name: str, expect: int = 3, hcl: str = "", server: bool = True) -> None:
        extra = [hcl] if hcl else []
        args = server_args(expect, *extra) if server else ["-hcl", FAST_RAFT, *(a for t in extra for a in ("-hcl", t))]
        super().__init__(tmp_path, name, *args)

    @property
    def serf_addr(self) -> str:
        return self.lan_addr

    def start(self, join: Sequence[str] = ()) -> Server:  # type: ignore[override]
        self.join = list(join)
        super().start()
        return self

    def put(self, key: str, value: str, timeout: float = 15) -> bool:  # type: ignore[override]
        return self.kv_put(key, value, timeout)

    def get(self, key: str, query: str = "") -> bytes | None:  # type: ignore[override]
        return self.kv_get(key, query)

    def stop(self, sig_kill: bool = False) -> int | None:  # type: ignore[override]
        return super().stop(sig_kill)
