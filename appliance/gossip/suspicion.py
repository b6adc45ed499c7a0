"""Lifeguard's dynamic suspicion timeout (LHA-Suspicion), as memberlist implements it.

How it works: when a member is first suspected, a timer starts at `max` if enough other members
exist to confirm the suspicion independently (k >= 1), else at `min`. Every confirmation from a
member not heard before shrinks the timeout along a logarithmic curve:

    timeout(c) = max(min, max - (max - min) * ln(c + 1) / ln(k + 1))

so after k confirmations the member is declared dead `min` seconds after the suspicion began.
A suspicion nobody corroborates (a degraded accuser) waits the full `max`, which gives the accused
time to refute. Bounds: `min = suspicion_mult * max(1, log10(n)) * probe_interval`,
`max = suspicion_max_timeout_mult * min`, `k = suspicion_mult - 2` (0 when `n - 2 < k`).
Pure: the caller owns the clock and re-arms its timer at `deadline()`.
"""

from __future__ import annotations

import math

# memberlist truncates in integer nanoseconds; the epsilon keeps float noise (31.223999...) from
# truncating a whole millisecond away.
_EPS = 1e-6


def suspicion_bounds(suspicion_mult: int, max_timeout_mult: int, n: int,
                     probe_interval_s: float) -> tuple[float, float]:
    """(min, max) suspicion timeout in seconds for a table of n members (self and dead included).

    The node scale is max(1, log10(n)) truncated to three decimals, like memberlist.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    node_scale = math.floor(node_scale * 1000 + _EPS) / 1000
    low = suspicion_mult * node_scale * probe_interval_s
    return low, max_timeout_mult * low


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """k: independent confirmations expected before the timeout reaches its minimum."""
    k = suspicion_mult - 2
    if n - 2 < k:  # n counts self and the suspect; too few others to confirm
        return 0
    return max(0, k)


def remaining_suspicion_time(confirmations: int, k: int, elapsed_s: float, low: float, high: float) -> float:
    """Seconds left on a suspicion timer after `confirmations` of `k` and `elapsed_s` seconds.

    The total timeout is floored to whole milliseconds (memberlist does the same); a non-positive
    result means the timer is already due.
    """
    if k <= 0:
        total = low
    else:
        frac = math.log(confirmations + 1) / math.log(k + 1)
        total = high - (high - low) * frac
        total = math.floor(total * 1000 + _EPS) / 1000
        total = max(low, total)
    return total - elapsed_s


class Suspicion:
    """One running suspicion timer: who accused, who confirmed, when it fires."""

    __slots__ = ("start", "k", "low", "high", "confirmations", "_seen", "incarnation", "verifying", "acked")

    def __init__(self, from_node: str, k: int, low: float, high: float, start: float, incarnation: int) -> None:
        self.start = start
        self.k = k
        self.low = low
        self.high = high
        self.incarnation = incarnation
        self.confirmations = 0
        self.verifying = False  # cairn: the last-chance probe before death is running
        self.acked = False  # ... and the suspect answered it
        # The first accuser can never confirm its own accusation.
        self._seen = {from_node}

    def fully_confirmed(self) -> bool:
        """k independent confirmations arrived (k = 0 never counts as confirmed)."""
        return self.k > 0 and self.confirmations >= self.k

    def confirm(self, from_node: str) -> bool:
        """Count an independent confirmation; True if it was new (the deadline moved earlier)."""
        if self.confirmations >= self.k or from_node in self._seen:
            return False
        self._seen.add(from_node)
        self.confirmations += 1
        return True

    def deadline(self) -> float:
        """Absolute time at which the member is declared dead."""
        return self.start + remaining_suspicion_time(self.confirmations, self.k, 0.0, self.low, self.high)
