"""Data-driven transcript tests (Raft now; gossip and the FSM later)."""
