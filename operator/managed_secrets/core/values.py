"""From fetched remote values to Secret data: property picking and extraction of JSON fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from managed_secrets.errors import PropertyNotFound


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _as_object(raw: bytes, key: str, wanted: str) -> Mapping[str, Any]:
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PropertyNotFound(f"key {key}: value is not JSON, so it has no {wanted}") from None
    if not isinstance(parsed, dict):
        raise PropertyNotFound(f"key {key}: value is not a JSON object, so it has no {wanted}")
    return parsed


def pick_property(raw: bytes, key: str, prop: str) -> bytes:
    """A field of a JSON object value: an exact top-level name first, else a dotted path (``db.user``)."""
    obj: Any = _as_object(raw, key, f"property {prop!r}")
    if prop in obj:
        return _to_bytes(obj[prop])
    for part in prop.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise PropertyNotFound(f"key {key}: property {prop!r} not found")
    return _to_bytes(obj)


def extract_fields(raw: bytes, key: str) -> dict[str, bytes]:
    """Every top-level field of a JSON object value; non-string fields are kept as JSON."""
    return {name: _to_bytes(value) for name, value in _as_object(raw, key, "fields to extract").items()}
