"""Several datacenters: the servers' WAN gossip pool (pool.py) and requests for another
datacenter (`?dc=`, `<svc>.service.<dc>.consul`) carried over server RPC (forward.py)."""
