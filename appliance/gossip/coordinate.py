"""Vivaldi network coordinates, as Serf's coordinate package computes them (sans-IO).

How it works
------------
Every member holds a `Coordinate`: a point in an 8-dimensional Euclidean space (seconds) plus a
`height` (the member's access-link latency, Vivaldi's height vector), an `adjustment` (a
per-member correction for what a Euclidean space cannot embed) and an `error` estimate (1.5 =
knows nothing). The estimated round-trip time between two members is

    raw = |a.vec - b.vec| + a.height + b.height
    rtt = raw + a.adjustment + b.adjustment      (or raw, if that is not positive)

Each direct probe ack within the probe timeout is one sample: the prober's `CoordinateClient`
gets the acking member's coordinate (carried in the ack payload) and the measured RTT, and moves
its own coordinate as a spring would (Dabek et al., SIGCOMM 2004):

1. latency filter: the median of the last 3 samples for that peer (Ledlie et al., NSDI 2007);
2. Vivaldi step: weight `w = e_i / (e_i + e_j)`; relative error `|d - r| / r`; the error estimate
   becomes `ce * w * wrongness + e_i * (1 - ce * w)` (at most 1.5); a force `cc * w * (r - d)`
   pushes the coordinate away from (or towards) the peer along the unit vector between them, and
   the height grows or shrinks in proportion; a confident member moves little, a new one fast;
3. adjustment: the mean of the last 20 residuals `r - raw distance`, halved (Lee et al.);
4. gravity: a pull `-(|c - origin| / 150 s)^2` towards the origin, so the whole system does not
   drift away.

Samples outside [0, 10 s] and peer coordinates with another dimensionality or NaN/Inf components
are rejected (`CoordinateError`); a step that produces a non-finite coordinate resets it to the
origin and counts a reset (Consul#3789, Serf#487). When two coordinates coincide the push
direction is a random unit vector from the injected `rng`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.gossip.members import Rng

ZERO_THRESHOLD = 1.0e-6
MAX_RTT_S = 10.0


@dataclass(frozen=True)
class CoordinateConfig:
    dimensionality: int = 8
    vivaldi_error_max: float = 1.5
    vivaldi_ce: float = 0.25
    vivaldi_cc: float = 0.25
    adjustment_window_size: int = 20
    height_min_s: float = 10.0e-6
    latency_filter_size: int = 3
    gravity_rho_s: float = 150.0


class CoordinateError(ValueError):
    """A sample or a peer coordinate the client refuses."""


@dataclass
class Coordinate:
    vec: list[float]
    error: float
    adjustment: float
    height: float

    @classmethod
    def origin(cls, config: CoordinateConfig | None = None) -> Coordinate:
        cfg = config or CoordinateConfig()
        return cls([0.0] * cfg.dimensionality, cfg.vivaldi_error_max, 0.0, cfg.height_min_s)

    def clone(self) -> Coordinate:
        return Coordinate(list(self.vec), self.error, self.adjustment, self.height)

    def is_valid(self) -> bool:
        return all(math.isfinite(x) for x in (*self.vec, self.error, self.adjustment, self.height))

    def is_compatible_with(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance_to(self, other: Coordinate) -> float:
        return _magnitude(_diff(self.vec, other.vec)) + self.height + other.height

    def distance_to(self, other: Coordinate) -> float:
        """Estimated round-trip time in seconds (Serf's DistanceTo)."""
        raw = self.raw_distance_to(other)
        adjusted = raw + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else raw

    def to_json(self) -> dict[str, Any]:
        """Consul's JSON shape: {"Vec", "Error", "Adjustment", "Height"}."""
        return {"Vec": list(self.vec), "Error": self.error, "Adjustment": self.adjustment, "Height": self.height}

    @classmethod
    def from_json(cls, doc: Any) -> Coordinate:
        """From Consul's JSON shape; CoordinateError if it is not one."""
        if not isinstance(doc, dict):
            raise CoordinateError("coordinate must be an object")
        vec = doc.get("Vec")
        if not isinstance(vec, list) or not vec or len(vec) > 64:
            raise CoordinateError("coordinate Vec must be a non-empty list of numbers")
        values = [*vec, doc.get("Error", 0.0), doc.get("Adjustment", 0.0), doc.get("Height", 0.0)]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            raise CoordinateError("coordinate fields must be numbers")
        coord = cls([float(x) for x in vec], float(values[-3]), float(values[-2]), float(values[-1]))
        if not coord.is_valid():
            raise CoordinateError("coordinate is not finite")
        return coord

    def apply_force(self, config: CoordinateConfig, force: float, other: Coordinate, rng: Rng) -> Coordinate:
        """A copy moved by `force` seconds along the unit vector from `other` to this coordinate."""
        if not self.is_compatible_with(other):
            raise CoordinateError("coordinate dimensionality does not match")
        unit, mag = _unit_vector_at(self.vec, other.vec, rng)
        moved = self.clone()
        moved.vec = [a + u * force for a, u in zip(self.vec, unit)]
        if mag > ZERO_THRESHOLD:
            moved.height = max((moved.height + other.height) * force / mag + moved.height, config.height_min_s)
        return moved


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def _magnitude(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _unit_vector_at(a: list[float], b: list[float], rng: Rng) -> tuple[list[float], float]:
    """(unit vector from b to a, distance); a random direction (and distance 0) if they coincide."""
    d = _diff(a, b)
    mag = _magnitude(d)
    if mag > ZERO_THRESHOLD:
        return [x / mag for x in d], mag
    d = [rng.random() - 0.5 for _ in a]
    mag = _magnitude(d)
    if mag > ZERO_THRESHOLD:
        return [x / mag for x in d], 0.0
    unit = [0.0] * len(a)
    unit[0] = 1.0
    return unit, 0.0


@dataclass
class CoordinateClient:
    """This member's coordinate, updated from RTT samples to peers (Serf's coordinate.Client)."""

    rng: Rng
    config: CoordinateConfig = field(default_factory=CoordinateConfig)
    coord: Coordinate = field(init=False)
    origin: Coordinate = field(init=False)
    resets: int = 0
    updates: int = 0
    rejected: int = 0
    zero_rtts: int = 0

    def __post_init__(self) -> None:
        self.coord = Coordinate.origin(self.config)
        self.origin = Coordinate.origin(self.config)
        self._filter: dict[str, list[float]] = {}
        self._adjustments = [0.0] * self.config.adjustment_window_size
        self._adjustment_index = 0

    def get(self) -> Coordinate:
        return self.coord.clone()

    def forget(self, node: str) -> None:
        """Drop a peer's latency samples (it left or was reaped)."""
        self._filter.pop(node, None)

    def distance_to(self, other: Coordinate) -> float:
        return self.coord.distance_to(other)

    def update(self, node: str, other: Coordinate, rtt_s: float) -> Coordinate:
        """Feed one RTT sample to `node` whose coordinate is `other`; returns the new coordinate."""
        if not self.coord.is_compatible_with(other):
            self.rejected += 1
            raise CoordinateError("dimensions aren't compatible")
        if not other.is_valid():
            self.rejected += 1
            raise CoordinateError("coordinate is invalid")
        if not (0.0 <= rtt_s <= MAX_RTT_S) or math.isnan(rtt_s):
            self.rejected += 1
            raise CoordinateError(
                f"round trip time not in valid range, duration {rtt_s}s is not a positive value less than 10s")
        if rtt_s == 0.0:
            self.zero_rtts += 1
        rtt = self._latency_filter(node, rtt_s)
        self._update_vivaldi(other, rtt)
        self._update_adjustment(other, rtt)
        self._update_gravity()
        if not self.coord.is_valid():
            self.resets += 1
            self.coord = Coordinate.origin(self.config)
        self.updates += 1
        return self.coord.clone()

    def _latency_filter(self, node: str, rtt_s: float) -> float:
        samples = self._filter.setdefault(node, [])
        samples.append(rtt_s)
        if len(samples) > self.config.latency_filter_size:
            del samples[0]
        return sorted(samples)[len(samples) // 2]

    def _update_vivaldi(self, other: Coordinate, rtt_s: float) -> None:
        cfg = self.config
        dist = self.coord.distance_to(other)
        rtt_s = max(rtt_s, ZERO_THRESHOLD)
        wrongness = abs(dist - rtt_s) / rtt_s
        total_error = max(self.coord.error + other.error, ZERO_THRESHOLD)
        weight = self.coord.error / total_error
        error = cfg.vivaldi_ce * weight * wrongness + self.coord.error * (1.0 - cfg.vivaldi_ce * weight)
        self.coord.error = min(error, cfg.vivaldi_error_max)
        force = cfg.vivaldi_cc * weight * (rtt_s - dist)
        self.coord = self.coord.apply_force(cfg, force, other, self.rng)

    def _update_adjustment(self, other: Coordinate, rtt_s: float) -> None:
        size = self.config.adjustment_window_size
        if size == 0:
            return
        self._adjustments[self._adjustment_index] = rtt_s - self.coord.raw_distance_to(other)
        self._adjustment_index = (self._adjustment_index + 1) % size
        self.coord.adjustment = sum(self._adjustments) / (2.0 * size)

    def _update_gravity(self) -> None:
        dist = self.origin.distance_to(self.coord)
        force = -((dist / self.config.gravity_rho_s) ** 2)
        self.coord = self.coord.apply_force(self.config, force, self.origin, self.rng)


def sort_by_distance(items: list[Any], source: Coordinate | None,
                     coordinate_of: Callable[[Any], Coordinate | None]) -> list[Any]:
    """Stable sort of `items` by estimated RTT from `source`; items without a coordinate last.

    `coordinate_of(item)` returns the item's Coordinate or None. No source: order unchanged.
    """
    if source is None:
        return list(items)

    def key(item: Any) -> float:
        coord = coordinate_of(item)
        if coord is None or not coord.is_compatible_with(source):
            return math.inf
        return source.distance_to(coord)

    return sorted(items, key=key)
