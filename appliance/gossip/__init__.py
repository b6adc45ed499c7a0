"""Gossip membership: a sans-IO SWIM core with Lifeguard's refinements and a Serf layer.

`GossipCore` (core.py) is the failure detector and disseminator; `Serf` (serf.py) adds member
status, tags and Lamport-ordered intents on top. Both take `now` and a seeded `random.Random`
and return packets to send and events; the drivers that own sockets, files and timers are driver.py,
transport.py, pool_setup.py, key_manager.py, snapshot_file.py and keyring_file.py.
docs/internals/gossip.md explains the protocol and the simulator.
"""

from appliance.gossip.awareness import Awareness
from appliance.gossip.broadcast import TransmitLimitedQueue, retransmit_limit
from appliance.gossip.config import GossipConfig, GossipConfigError
from appliance.gossip.core import GossipCore
from appliance.gossip.lamport import LamportClock
from appliance.gossip.members import NodeState, push_pull_scale
from appliance.gossip.messages import DecodeError, MessageType, NodeStateKind
from appliance.gossip.outputs import EventKind, MemberEvent, Send, StreamRequest
from appliance.gossip.serf import Member, MemberStatus, Serf, SerfEvent, SerfEventKind, decode_tags, encode_tags
from appliance.gossip.suspicion import Suspicion, expected_confirmations, remaining_suspicion_time, suspicion_bounds

__all__ = [
    "Awareness",
    "DecodeError",
    "EventKind",
    "GossipConfig",
    "GossipConfigError",
    "GossipCore",
    "LamportClock",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "MessageType",
    "NodeState",
    "NodeStateKind",
    "Send",
    "Serf",
    "SerfEvent",
    "SerfEventKind",
    "StreamRequest",
    "Suspicion",
    "TransmitLimitedQueue",
    "decode_tags",
    "encode_tags",
    "expected_confirmations",
    "push_pull_scale",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_bounds",
]
