"""Canonical remote keys: the key a store will actually resolve, so scoping checks the key that is read.

A ClusterSecretBackend's ``remoteKeys`` patterns are only as good as the string they are matched against.
``apps/team-a/../team-b/db`` matches ``apps/team-a/*``, yet the HTTP client normalises it to team-b's
path before Vault sees it. So every remote key is put in canonical form first, by its provider
(``CanonicalizingProvider.canonical_ref``, optional) or by the strict generic rule here, and anything a layer
between the operator and the store could read differently (dot or empty segments, percent-escapes,
backslashes, control characters, edge whitespace) is refused outright with ``KeyNotAllowed``. The
reconcile core then matches the canonical key, and hands the provider that same canonical key to read.

This module imports no SDK: the core uses it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from managed_secrets.errors import KeyNotAllowed
from managed_secrets.providers.base import CanonicalizingProvider, RemoteKey, SecretProvider

#: Characters some layer between the operator and a store may interpret: percent-escapes (decoded by
#: HTTP servers and proxies), backslashes (a separator to some servers), URL query and fragment
#: delimiters, and ``;`` (path parameters: ``..;`` is ``..`` to some servers).
AMBIGUOUS_CHARACTERS = frozenset("%\\?#;")
#: Unicode categories refused anywhere in a key or version: control and format characters (NUL, newlines,
#: bidi overrides, zero-width characters), surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Explains the rule in KeyNotAllowed messages.
CANONICAL_RULE = (
    "keys are '/'-separated names without empty, '.' or '..' segments, percent-escapes, backslashes,"
    " '?', '#', ';', control characters or surrounding spaces"
)


def ambiguity(text: str, *, leading_slash: bool = False, trailing_slash: bool = False) -> str | None:
    """Why ``text`` (a key, or a version) is ambiguous, or None when it is not.

    ``leading_slash`` / ``trailing_slash``: a ``/`` there is a literal part of the name in this store
    (Parameter Store's ``/a/b``, a Secrets Manager name); otherwise it is refused like any empty segment.
    """
    if not text:
        return "it is empty"
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"it contains the control or format character U+{ord(char):04X}"
    if text != text.strip():
        return "it starts or ends with a space (some stores trim it)"
    for char in sorted(AMBIGUOUS_CHARACTERS):
        if char in text:
            return f"it contains {char!r}"
    segments = text.split("/")
    if leading_slash and len(segments) > 1 and segments[0] == "":
        segments = segments[1:]
    if trailing_slash and len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            shown = "an empty" if segment == "" else f"a {segment!r}"
            return f"it has {shown} path segment"
    return None


def refuse_if_ambiguous(
    label: str, ref: RemoteKey, *, leading_slash: bool = False, trailing_slash: bool = False
) -> None:
    """Raise KeyNotAllowed when the key or the version of ``ref`` is ambiguous."""
    why = ambiguity(ref.key, leading_slash=leading_slash, trailing_slash=trailing_slash)
    if why is not None:
        raise KeyNotAllowed(f"{label}: key {ref.key!r} is ambiguous: {why}; {CANONICAL_RULE}")
    if ref.version is not None:
        refuse_ambiguous_version(label, ref, ref.version)


def refuse_ambiguous_version(label: str, ref: RemoteKey, version: str) -> None:
    """A version is one path segment at most: it must not smuggle a path into the request."""
    why = ambiguity(version)
    if why is None and "/" in version:
        why = "it contains '/'"
    if why is not None:
        raise KeyNotAllowed(
            f"{label}: version {version!r} of key {ref.key!r} is ambiguous: {why}; a version is a single"
            " name or number"
        )


def strict_canonical_ref(label: str, ref: RemoteKey) -> RemoteKey:
    """The generic rule for providers that do not canonicalise: refuse every ambiguous form, keep the
    rest unchanged (no leading or trailing ``/``, no empty or dot segments, no escapes)."""
    refuse_if_ambiguous(label, ref)
    return ref


def canonicalizer(provider: SecretProvider, label: str) -> Callable[[RemoteKey], RemoteKey]:
    """The provider's own canonical form when it has one, else the strict generic rule."""
    if isinstance(provider, CanonicalizingProvider):
        return provider.canonical_ref
    return lambda ref: strict_canonical_ref(label, ref)


def case_insensitive_keys(provider: SecretProvider) -> bool:
    """Whether the store compares key names case-insensitively (Key Vault): scoping then folds case.

    A provider says so with a ``case_insensitive_keys = True`` attribute; its canonical keys are then
    lower case.
    """
    return getattr(provider, "case_insensitive_keys", False) is True
