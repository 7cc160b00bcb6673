"""Finding a secret value in text, raw or base64-encoded at any byte alignment."""

from __future__ import annotations

import base64


def encodings(value: str) -> list[str]:
    """The value itself and the alignment-independent core of its base64 forms (as inside a larger blob)."""
    raw = value.encode()
    found = [value]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        # Drop the characters touched by the padding prefix and by the end of the value.
        start = (pad * 4 + 2) // 3 + 1
        found.append(encoded[start : len(encoded) - 4])
    return [f for f in found if len(f) >= 8]


def assert_absent(value: str, text: str, where: str) -> None:
    for form in encodings(value):
        assert form not in text, f"secret value (as {form!r}) found in {where}"
