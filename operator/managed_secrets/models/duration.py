"""Go-style durations (`30s`, `1h30m`, `0`), the format Kubernetes users write in manifests."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

#: Also the CRD's `pattern`, so the apiserver rejects what this module would.
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
#: Longest duration text a field takes (the CRD's maxLength).
MAX_DURATION_LENGTH = 64
#: In CEL: text CEL's duration() parses, and the guard that keeps it from overflowing on long numbers
#: (anything the guard refuses is longer than a year anyway; the pattern reports bad syntax).
_CEL_SYNTAX = "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_CEL_GUARD = (
    "^((0*[0-9]{1,11}([.][0-9]+)?ms)|(0*[0-9]{1,8}([.][0-9]+)?s)|(0*[0-9]{1,7}([.][0-9]+)?m)"
    "|(0*[0-9]{1,5}([.][0-9]+)?h))+$"
)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

#: The longest duration any field takes: a year. Longer ones (up to 64 digits pass the pattern) would
#: overflow ``timedelta``; the CRDs' CEL rules reject them too.
MAX_DURATION = timedelta(hours=8760)


def parse_duration(text: str) -> timedelta:
    """``text`` as a duration; ValueError (never OverflowError) for anything malformed or over a year."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, like 30s, 5m, 1h30m, or 0")
    # A float holds any 64-character number (at most about 1e64 * 3600), so the bound is checked first.
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than {format_duration(MAX_DURATION)} (a year)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds == 0:
        return "0"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or f"{int(seconds * 1000)}ms"


def duration_json_schema(bounds: str, message: str) -> dict[str, Any]:
    """The CRD schema of a duration field: a string with the pattern, and a CEL rule checking ``bounds``
    (an expression over ``duration(self)``, like the field's Python validator)."""
    expression = f"!self.matches('{_CEL_SYNTAX}') || (self.matches('{_CEL_GUARD}') && {bounds})"
    return {
        "type": "string",
        "maxLength": MAX_DURATION_LENGTH,
        "pattern": DURATION_PATTERN,
        "x-kubernetes-validations": [{"rule": expression, "message": message}],
    }


def cel_duration(value: timedelta) -> str:
    """``value`` as a CEL duration literal."""
    return f"duration('{format_duration(value) if value else '0s'}')"
