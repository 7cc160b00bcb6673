"""The leak checks of the test kit (managed_secrets.testing.leaks), under the name the tests import."""

from __future__ import annotations

from managed_secrets.testing.leaks import assert_absent, encodings

__all__ = ["assert_absent", "encodings"]
