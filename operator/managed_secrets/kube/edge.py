"""The one translation of the Kubernetes client's failures into the project's errors.

Every adapter in this package calls the API server through ``call``/``call_or_none``/``send`` (or wraps its
own calls in ``translated``), so each call handles the same failures the same way:

- ``ApiException``: by HTTP status through the call's ``Translation``, else its default error;
- transport failures (urllib3 errors, timeouts, refused or reset connections, TLS errors, cut-off bodies):
  the default error, naming the failure's type;
- an answer that is not JSON: the default error.

Messages carry the operation (names only), the HTTP code and reason, the fields involved: never the server's
message text or the body, which for a Secret could quote a value.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from managed_secrets.kube.raw import read_json, release

#: (what, described API error) -> the error to raise; ``what`` names the operation, e.g. "reading Secret a/b".
Rule = Callable[[str, str], Exception]

#: Failures below HTTP: the connection, TLS, timeouts (urllib3 wraps most; some reach here as OSError).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
#: An answer that cannot be parsed (bytes that are not UTF-8 are a UnicodeDecodeError, not a JSONDecodeError).
DECODE_ERRORS: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError)


def describe_api_error(error: ApiException) -> str:
    """Code, reason and the fields involved; the server's free-text message is left out on purpose."""
    details = ""
    try:
        body = json.loads(error.body or "{}")
        causes = (body.get("details") or {}).get("causes") or []
        fields = sorted({cause.get("field", "") for cause in causes if cause.get("field")})
        reason = body.get("reason") or error.reason
        details = f"{reason}" + (f" ({', '.join(fields)})" if fields else "")
    except (ValueError, AttributeError):
        details = str(error.reason)
    return f"HTTP {error.status} {details}"


@dataclass(frozen=True)
class Translation:
    """Which error a failed call becomes: a rule for some HTTP statuses, ``default`` for everything else.

    ``default`` is any exception class taking one message (a ``SyncError``, a ``RolloutError``).
    """

    default: Callable[[str], Exception]
    by_status: Mapping[int, Rule] = field(default_factory=dict)

    def but(self, by_status: Mapping[int, Rule]) -> Translation:
        """This translation with more (or other) rules by status."""
        return Translation(self.default, {**self.by_status, **by_status})

    def api_error(self, what: str, error: ApiException) -> Exception:
        described = describe_api_error(error)
        rule = self.by_status.get(error.status) if isinstance(error.status, int) else None
        if rule is not None:
            return rule(what, described)
        return self.default(f"{what}: {described}")

    def transport_error(self, what: str, error: Exception) -> Exception:
        return self.default(f"{what}: {type(error).__name__}")

    def decode_error(self, what: str, error: Exception) -> Exception:
        return self.default(f"{what}: the API server's answer is not JSON ({type(error).__name__})")


@contextlib.contextmanager
def translated(what: str, translation: Translation) -> Iterator[None]:
    """Raise the translation of any foreign failure inside the block (``from None``: no server text)."""
    try:
        yield
    except ApiException as error:
        raise translation.api_error(what, error) from None
    except DECODE_ERRORS as error:
        raise translation.decode_error(what, error) from None
    except TRANSPORT_ERRORS as error:
        raise translation.transport_error(what, error) from None


def call(
    what: str,
    translation: Translation,
    method: Callable[..., urllib3.HTTPResponse],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``method(*args, **kwargs)`` of the Kubernetes client, raw, and its JSON answer."""
    with translated(what, translation):
        return read_json(method(*args, _preload_content=False, **kwargs))


def call_or_none(
    what: str,
    translation: Translation,
    method: Callable[..., urllib3.HTTPResponse],
    *args: Any,
    **kwargs: Any,
) -> Any | None:
    """Like ``call``; None when the object does not exist (HTTP 404)."""
    with translated(what, translation):
        try:
            response = method(*args, _preload_content=False, **kwargs)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return read_json(response)


def send(
    what: str,
    translation: Translation,
    method: Callable[..., urllib3.HTTPResponse],
    *args: Any,
    missing_ok: bool = False,
    **kwargs: Any,
) -> bool:
    """``method(*args, **kwargs)``, its answer discarded; False when ``missing_ok`` and it got HTTP 404."""
    with translated(what, translation):
        try:
            response = method(*args, _preload_content=False, **kwargs)
        except ApiException as error:
            if missing_ok and error.status == 404:
                return False
            raise
        release(response)
    return True
