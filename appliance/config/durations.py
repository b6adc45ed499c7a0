"""Go-style durations ("10s", "1m30s", "500ms", "72h") as Consul parses and prints them.

parse_duration() accepts what Go's time.ParseDuration accepts (a bare "0" included, a bare
number otherwise refused); format_duration() prints what Go's Duration.String() prints, so a
check's "Interval" round-trips as Consul shows it ("1m0s", "1m30s", "500ms").
"""

from __future__ import annotations

import re

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """A string that is not a Go duration."""


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds."""
    s = text.strip()
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            if re.fullmatch(r"\d+(\.\d*)?", s[pos:]):
                raise DurationError(f'time: missing unit in duration "{text}"')
            raise DurationError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * int(round(total))


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds."""
    return parse_duration_ns(text) / 1e9


def coerce_duration(value: object) -> float:
    """A duration from JSON: a Go string, or an integer count of nanoseconds (Consul's API accepts both)."""
    if isinstance(value, bool):
        raise DurationError(f"time: invalid duration {value!r}")
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    if isinstance(value, str):
        return parse_duration(value)
    raise DurationError(f"time: invalid duration {value!r}")


def _fmt_frac(value: int, unit_ns: int) -> str:
    whole, frac = divmod(value, unit_ns)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit_ns)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration_ns(ns: int) -> str:
    """Go's Duration.String(): 0s, 500ms, 1.5s, 1m0s, 1h30m0s."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fmt_frac(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_fmt_frac(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    secs = _fmt_frac(rest, 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a time.Duration."""
    return format_duration_ns(int(round(seconds * 1e9)))
