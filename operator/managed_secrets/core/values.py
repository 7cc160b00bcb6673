"""From fetched remote values to Secret data: property picking and extraction of JSON fields."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from managed_secrets.errors import DecodingFailed, PropertyNotFound
from managed_secrets.models.managedsecret import DecodingStrategy


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


def _b64(raw: bytes, alphabet: DecodingStrategy) -> bytes:
    """Strict: the whole value in that alphabet (whitespace around it ignored), padding optional."""
    text = raw.strip()
    text += b"=" * (-len(text) % 4)
    if alphabet is DecodingStrategy.BASE64URL:
        if b"+" in text or b"/" in text:
            raise binascii.Error("not the URL-safe alphabet")
        return base64.urlsafe_b64decode(text)
    return base64.b64decode(text, validate=True)


def decode(raw: bytes, strategy: DecodingStrategy, where: str) -> bytes:
    """``raw`` decoded as ``strategy`` says; ``where`` names the key and property in errors (never the value)."""
    if strategy is DecodingStrategy.NONE:
        return raw
    if strategy is DecodingStrategy.AUTO:
        for alphabet in (DecodingStrategy.BASE64, DecodingStrategy.BASE64URL):
            try:
                return _b64(raw, alphabet)
            except (binascii.Error, ValueError):
                continue
        return raw
    try:
        return _b64(raw, strategy)
    except (binascii.Error, ValueError):
        raise DecodingFailed(
            f"{where}: not valid {strategy.value} (decodingStrategy {strategy.value})"
        ) from None
