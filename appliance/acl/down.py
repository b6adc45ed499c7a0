"""`acl.down_policy`: what a token may do while no server (or primary datacenter) can resolve it.

How it works
------------
Consul's client agents resolve a token by asking a server and keep the answer for
`acl.token_ttl` (30 s); a secondary datacenter without token replication asks the primary the
same way. Once that answer is older than token_ttl and the question cannot be asked again (no
server reachable, the primary unreachable), `acl.down_policy` decides. `DownPolicy.answer(last)`,
`last` being the last answer for that secret (None if there was none):

* `extend-cache` (the default) and `async-cache`: the last answer, however old; a token never
  seen is denied;
* `allow`: everything a default-allow agent allows (not the ACL system itself, nor snapshots);
* `deny`: everything denied.

`async-cache` differs from `extend-cache` in Consul only while the servers are up (a stale answer
is served while a fresh one is fetched); here a stale answer is fetched again before it is used,
so the two behave the same. The callers (appliance/acl/remote.py: `ServerTokens` on a client
agent, `RemoteTokens` in a secondary datacenter) keep the answers and decide when to ask. Pure.
"""

from __future__ import annotations

from appliance.acl.authorizer import Authorizer
from appliance.acl.policy import Rules
from appliance.acl.resolve import Identity


class DownPolicy:
    """The answers of `acl.down_policy` (see the module docstring)."""

    def __init__(self, down_policy: str) -> None:
        self.down_policy = down_policy
        self.allow_all = Identity("", None, Authorizer(Rules(), True))
        self.deny_all = Identity("", None, Authorizer(Rules(), False))
        self.down_answers = 0  # answers given while the token could not be resolved

    def keeps_last(self) -> bool:
        """Whether the last answer for a token stands (extend-cache, async-cache)."""
        return self.down_policy in ("extend-cache", "async-cache")

    def answer(self) -> Identity:
        """The answer for a token whose last answer does not stand (or that has none)."""
        self.down_answers += 1
        return self.allow_all if self.down_policy == "allow" else self.deny_all
