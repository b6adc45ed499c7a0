"""Deterministic simulation of Raft clusters (see docs/internals/raft.md)."""
