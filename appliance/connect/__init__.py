"""Connect, the service mesh's control plane: the built-in certificate authority (ca.py, SPIFFE
identities in spiffe.py), config entries (entries.py), intentions stored as service-intentions
entries (intentions.py) and the agent's leaf certificate cache (leaf.py).

These modules are cores: plain synchronous Python over values, with the time passed in. Key
generation and signing use `cryptography` (its keys draw on the operating system's randomness,
as a certificate authority's must). The HTTP handlers (appliance/http/handlers/connect*.py) and
the FSM (appliance/state/connect.py) are the thin edges around them.
"""
