"""Local health awareness (Lifeguard LHA-Probe): a saturating score that slows a sick prober.

How it works: the score starts at 0 and stays in [0, max_multiplier - 1]. A successful probe
lowers it by one; a failed probe raises it by the number of nacks that did not arrive (or by one
when no helper could send nacks); refuting an accusation about ourselves raises it by one. The
probe deadline is `probe_interval x (score + 1)`, so a member whose own packets are late or lost
stops accusing healthy peers instead of spreading false suspicions. Only the deadline is scaled
(memberlist parity); suspicion timeouts are not.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add `delta` to the score, clamp it, return the new score."""
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))
        return self.score

    def scale_timeout(self, timeout_s: float) -> float:
        """`timeout_s x (score + 1)`."""
        return timeout_s * (self.score + 1)
