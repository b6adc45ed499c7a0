"""Sessions on the leader: TTL timers, renewals and the lock-delay check (leader.py)."""
