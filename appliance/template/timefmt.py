"""Go's time layouts (`2006-01-02T15:04:05Z07:00`) applied to a Python datetime, for `timestamp`.

A layout is written with Go's reference time, Mon Jan 2 15:04:05 MST 2006; each element of it
is replaced by the same element of the given time. Elements: 2006 06 January Jan 01 1 Monday Mon
02 _2 2 002 15 03 3 04 4 05 5 PM pm MST Z07:00 Z0700 Z07 -07:00 -0700 -07 and fractional
seconds (.000 keeps zeros, .999 drops trailing zeros; a comma works as the separator too).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_ELEMENT = re.compile(
    r"2006|January|Jan|Monday|Mon|MST|Z07:00:00|Z07:00|Z0700|Z07|-07:00:00|-07:00|-0700|-07"
    r"|[.,](?:0+|9+)(?!\d)|002|__2|_2|01|02|03|04|05|06|15|PM|pm|1|2|3|4|5"
)


def _zone(t: datetime, element: str) -> str:
    offset = t.utcoffset() or timedelta(0)
    if element.startswith("Z") and offset == timedelta(0):
        return "Z"
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hh, mm, ss = total // 3600, total % 3600 // 60, total % 60
    body = element.lstrip("Z-")
    if body == "07":
        return f"{sign}{hh:02d}"
    if body == "0700":
        return f"{sign}{hh:02d}{mm:02d}"
    if body == "07:00":
        return f"{sign}{hh:02d}:{mm:02d}"
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}"


def _fraction(t: datetime, element: str) -> str:
    digits = len(element) - 1
    nanos = f"{t.microsecond:06d}000"[:digits]
    if element[1] == "9":
        nanos = nanos.rstrip("0")
        return "." + nanos if nanos else ""
    return element[0] + nanos


def go_time_format(t: datetime, layout: str) -> str:
    def replace(m: re.Match[str]) -> str:
        e = m.group()
        if e[0] in ".,":
            return _fraction(t, e)
        if "07" in e:
            return _zone(t, e)
        hour12 = t.hour % 12 or 12
        table = {
            "2006": f"{t.year:04d}", "06": f"{t.year % 100:02d}",
            "January": t.strftime("%B"), "Jan": t.strftime("%b"), "01": f"{t.month:02d}", "1": str(t.month),
            "Monday": t.strftime("%A"), "Mon": t.strftime("%a"),
            "02": f"{t.day:02d}", "_2": f"{t.day:>2d}", "2": str(t.day),
            "002": f"{t.timetuple().tm_yday:03d}", "__2": f"{t.timetuple().tm_yday:>3d}",
            "15": f"{t.hour:02d}", "03": f"{hour12:02d}", "3": str(hour12),
            "04": f"{t.minute:02d}", "4": str(t.minute), "05": f"{t.second:02d}", "5": str(t.second),
            "PM": "PM" if t.hour >= 12 else "AM", "pm": "pm" if t.hour >= 12 else "am",
            "MST": t.tzname() or "UTC",
        }  # fmt: skip
        return table[e]

    return _ELEMENT.sub(replace, layout)
