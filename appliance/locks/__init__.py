"""Locks and semaphores on the KV store, as Consul's Go client takes and holds them.

session.py creates, renews and destroys the lock's session and reads and writes keys;
holder.py is what both kinds share (the session's life, the bounded wait, the monitor);
mutex.py is `api.Lock` (one key, `-n 1`); semaphore.py is `api.Semaphore` (`-n N`).
`cairn lock` is appliance/cli/lock.py.
"""
