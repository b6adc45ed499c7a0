"""Transmit-limited broadcast queue: what gets piggybacked on every gossip packet.

How it works: every state change worth telling others (alive, suspect, dead, a Serf intent) is
queued as encoded message bytes. Each time a packet goes out, `get_broadcasts` fills the space left
in it: messages sent the fewest times first, and within the same count the largest message that
still fits (newest first among equal sizes), so fresh news always wins and packets pack well. A
message is dropped after `retransmit_mult x ceil(log10(n + 1))` transmissions in total (SWIM
piggybacks each update lambda x log n times). Messages about one member are "named" by that member:
queueing alive(X, 6) drops a queued suspect(X, 5), since only the newest news about X matters.
Unnamed (unique) messages are never invalidated. `prune` bounds the queue by dropping the most
transmitted messages first.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Total transmissions of one broadcast: retransmit_mult x ceil(log10(n + 1))."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


class _Item:
    __slots__ = ("id", "key", "data", "size", "transmits", "on_finished")

    def __init__(self, id_: int, key: str | None, data: bytes, on_finished: Callable[[], None] | None) -> None:
        self.id = id_
        self.key = key
        self.data = data
        self.size = len(data)
        self.transmits = 0
        self.on_finished = on_finished


def _order(item: _Item) -> tuple[int, int]:
    return (-item.size, -item.id)


def _neg_size(item: _Item) -> int:
    return -item.size


class TransmitLimitedQueue:
    """Broadcasts ordered by (transmits, larger first, newer first), with invalidation by name."""

    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._tiers: dict[int, list[_Item]] = {}
        self._by_key: dict[str, _Item] = {}
        self._next_id = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def queue(self, data: bytes, key: str | None = None, on_finished: Callable[[], None] | None = None) -> None:
        """Queue encoded message bytes. A `key` (member name) invalidates the queued message with that key."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._remove(old)
                self._finish(old)
        self._next_id += 1
        item = _Item(self._next_id, key, data, on_finished)
        if key is not None:
            self._by_key[key] = item
        insort(self._tiers.setdefault(0, []), item, key=_order)
        self._len += 1

    def get_broadcasts(self, overhead: int, limit: int, n: int) -> list[bytes]:
        """Take messages fitting in `limit` bytes, counting `overhead` bytes per message.

        Each taken message's transmit count goes up by one; a message that reached the retransmit
        limit for a cluster of `n` members is dropped and its `on_finished` hook runs.
        """
        if not self._len:
            return []
        transmit_limit = retransmit_limit(self.retransmit_mult, n)
        used = 0
        out: list[bytes] = []
        again: list[_Item] = []
        for tier_no in sorted(self._tiers):
            tier = self._tiers[tier_no]
            while tier:
                free = limit - used - overhead
                if free <= 0:
                    break
                # Sizes are descending in a tier: the first one <= free is the largest that fits.
                i = bisect_left(tier, -free, key=_neg_size)
                if i >= len(tier):
                    break
                item = tier.pop(i)
                self._len -= 1
                used += item.size + overhead
                out.append(item.data)
                if item.transmits + 1 >= transmit_limit:
                    if item.key is not None and self._by_key.get(item.key) is item:
                        del self._by_key[item.key]
                    self._finish(item)
                else:
                    item.transmits += 1
                    again.append(item)
            if not tier:
                del self._tiers[tier_no]
            if limit - used - overhead <= 0:
                break
        for item in again:
            insort(self._tiers.setdefault(item.transmits, []), item, key=_order)
            self._len += 1
        return out

    def prune(self, max_retain: int) -> int:
        """Drop the most transmitted (then smallest, oldest) messages until at most `max_retain` remain."""
        dropped = 0
        while self._len > max_retain:
            tier_no = max(self._tiers)
            tier = self._tiers[tier_no]
            item = tier.pop()
            if not tier:
                del self._tiers[tier_no]
            self._len -= 1
            if item.key is not None and self._by_key.get(item.key) is item:
                del self._by_key[item.key]
            self._finish(item)
            dropped += 1
        return dropped

    def reset(self) -> None:
        """Forget everything (finished hooks do not run)."""
        self._tiers.clear()
        self._by_key.clear()
        self._len = 0

    def transmits_of(self, key: str) -> int | None:
        """Transmit count of the queued message named `key`, or None (for tests and metrics)."""
        item = self._by_key.get(key)
        return None if item is None else item.transmits

    def _remove(self, item: _Item) -> None:
        tier = self._tiers[item.transmits]
        i = bisect_left(tier, _order(item), key=_order)  # ids are unique: lands on the item
        if i < len(tier) and tier[i] is item:
            del tier[i]
        if not tier:
            del self._tiers[item.transmits]
        self._len -= 1

    @staticmethod
    def _finish(item: _Item) -> None:
        if item.on_finished is not None:
            item.on_finished()
