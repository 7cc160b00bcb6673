"""decodingStrategy: None, Base64, Base64URL and Auto, strictly, and errors that name no value."""

from __future__ import annotations

import base64

import pytest

from managed_secrets.core.values import decode
from managed_secrets.errors import DecodingFailed
from managed_secrets.models.managedsecret import DecodingStrategy as D

RAW = bytes(range(256))


def test_each_strategy() -> None:
    assert decode(b"as-is", D.NONE, "k") == b"as-is"
    assert decode(base64.b64encode(RAW), D.BASE64, "k") == RAW
    assert decode(base64.urlsafe_b64encode(RAW), D.BASE64URL, "k") == RAW
    assert decode(base64.urlsafe_b64encode(RAW).rstrip(b"="), D.BASE64URL, "k") == RAW, "padding optional"
    assert decode(base64.b64encode(RAW) + b"\n", D.BASE64, "k") == RAW, "a trailing newline"
    assert decode(base64.b64encode(RAW), D.AUTO, "k") == RAW
    assert decode(base64.urlsafe_b64encode(RAW), D.AUTO, "k") == RAW
    assert decode(b"not base64!", D.AUTO, "k") == b"not base64!"


@pytest.mark.parametrize(
    ("value", "strategy"),
    [
        (b"canary-not base64!", D.BASE64),
        (base64.b64encode(RAW), D.BASE64URL),  # '+' and '/' are not the URL-safe alphabet
        (base64.urlsafe_b64encode(RAW), D.BASE64),  # nor '-' and '_' the standard one
        (b"abcde", D.BASE64),  # a length no padding can complete
    ],
)
def test_invalid_input_is_decoding_failed_without_the_value(value: bytes, strategy: D) -> None:
    with pytest.raises(DecodingFailed) as caught:
        decode(value, strategy, "key app: property 'cert'")
    assert caught.value.message.startswith("key app: property 'cert': not valid")
    assert b"canary" not in caught.value.message.encode()
