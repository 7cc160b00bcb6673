"""Templates for the target Secret, rendered in Jinja2's sandbox.

Templates see every fetched value by its Secret key, as variables and through ``values['name']`` (for
names that are not identifiers). Errors name the template key and the problem, never a value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_secrets.errors import TemplateError


def _b64encode(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def _b64decode(value: str) -> str:
    return base64.b64decode(value).decode()


def _fromjson(value: str) -> Any:
    return json.loads(value)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters.update(b64encode=_b64encode, b64decode=_b64decode, fromjson=_fromjson)
    return env


_ENV = _environment()


def check_templates(templates: Mapping[str, str]) -> None:
    """Parse without rendering: a syntax error is reported before anything is fetched."""
    for name, source in templates.items():
        try:
            _ENV.parse(source)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"template for key {name!r}: line {error.lineno}: {error.message}") from None


def render_templates(templates: Mapping[str, str], values: Mapping[str, bytes]) -> dict[str, bytes]:
    text_values = {name: value.decode("utf-8", errors="replace") for name, value in values.items()}
    context: dict[str, Any] = {**text_values, "values": text_values}
    rendered: dict[str, bytes] = {}
    for name, source in templates.items():
        try:
            rendered[name] = _ENV.from_string(source).render(context).encode()
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"template for key {name!r}: line {error.lineno}: {error.message}") from None
        except jinja2.UndefinedError as error:
            # Jinja's message names the missing variable or attribute, which is a name, not a value.
            raise TemplateError(f"template for key {name!r}: {error.message}") from None
        except SecurityError:
            raise TemplateError(f"template for key {name!r}: operation not allowed in the sandbox") from None
        except Exception as error:
            # Other messages (a failed filter, a bad conversion) may quote the value: keep only the kind.
            raise TemplateError(
                f"template for key {name!r}: rendering failed ({type(error).__name__})"
            ) from None
    return rendered
