"""Templates for the target Secret, rendered in Jinja2's sandbox, with limits.

Templates see every fetched value by its Secret key, as variables and through ``values['name']`` (for
names that are not identifiers). ``target.template.data`` templates render text (written as UTF-8);
``target.template.binaryData`` templates render base64 text, which is decoded into the Secret, so a
template can produce any bytes.

Limits. This module holds the cheap in-sandbox guards: repetition (``*``), concatenation (``+``), powers
(``**``), ``range`` (a budget for the whole render, like Jinja's MAX_RANGE), padding and replacing
(``center``, ``indent``, ``replace``, ``ljust`` ...) and the rendered output are checked *before* the
allocation, so common abuse fails at once with a clear message. They cannot bound everything a template
can do (an empty loop over a long string, a string doubled in a namespace): the hard limits on time and
memory are the render processes' (runtime/render_pool.py), which run this module.

Errors name the template key, the function that failed and the limit, never a value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, cast

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_secrets.errors import TemplateError

#: Integers a template computes stay below this many bits (``2 ** 10 ** 9`` would take minutes).
MAX_INT_BITS = 1 << 16


@dataclass(frozen=True)
class RenderLimits:
    #: Wall-clock seconds for rendering one Secret (all its templates); enforced by the render process.
    timeout: float = 2.0
    #: Bytes of rendered data per Secret, all keys together (a Secret holds at most 1 MiB anyway).
    max_output: int = 1 << 20
    #: Address space of one render process, MiB.
    memory_mib: int = 128
    #: Items all ``range()`` calls of one render may produce together.
    max_range: int = 100_000


DEFAULT_LIMITS = RenderLimits()


class Renderer(Protocol):
    """Checks and renders the templates of one Secret; raises TemplateError (limits included)."""

    def check(self, templates: Mapping[str, str], binary_templates: Mapping[str, str]) -> None: ...

    def render(
        self,
        templates: Mapping[str, str],
        binary_templates: Mapping[str, str],
        values: Mapping[str, bytes],
        *,
        owner: str = "",
    ) -> dict[str, bytes]: ...


class InProcessRenderer:
    """Renders in the calling thread: guards only, no hard time or memory limit. For tests and tools;
    the operator renders in separate processes (runtime/render_pool.py)."""

    def __init__(self, limits: RenderLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    def check(self, templates: Mapping[str, str], binary_templates: Mapping[str, str]) -> None:
        check_templates(templates, binary_templates)

    def render(
        self,
        templates: Mapping[str, str],
        binary_templates: Mapping[str, str],
        values: Mapping[str, bytes],
        *,
        owner: str = "",  # noqa: ARG002 - nothing to cancel in-process
    ) -> dict[str, bytes]:
        return render_templates(templates, values, binary_templates=binary_templates, limits=self.limits)


# -- errors that carry a message safe to show ------------------------------------------------------------


class _SafeError(Exception):
    """Raised by the guards and filters: the message names functions and limits, never a value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _LimitExceeded(_SafeError):
    pass


_PASS_THROUGH = (jinja2.TemplateError, _SafeError, RecursionError, MemoryError)


# -- per-render state (the render runs synchronously in one context) ------------------------------------


@dataclass
class _RenderState:
    limits: RenderLimits
    #: Template sources: a name that appears in them was written by the template's author.
    sources: str
    #: The values as text: a name equal to one was computed from a secret and is not shown.
    texts: frozenset[str] = field(default_factory=frozenset)
    range_used: int = 0

    def can_show(self, name: object) -> bool:
        text = str(name)
        return bool(text) and text in self.sources and text not in self.texts


_STATE: ContextVar[_RenderState | None] = ContextVar("managed_secrets_render_state", default=None)


def _limits() -> RenderLimits:
    state = _STATE.get()
    return state.limits if state is not None else DEFAULT_LIMITS


@contextlib.contextmanager
def _render_state(state: _RenderState) -> Iterator[_RenderState]:
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


# -- guards ----------------------------------------------------------------------------------------------


def _check_size(function: str, size: int) -> None:
    limit = _limits().max_output
    if size > limit:
        raise _LimitExceeded(
            f"{function}: the result would be {size} characters or items, over the limit of {limit} "
            "(the most a Secret's rendered data may hold)"
        )


def _check_int(function: str, bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise _LimitExceeded(f"{function}: the result would exceed {MAX_INT_BITS} bits")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: object) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        if _sized(left) and _is_int(right):
            _check_size("'*'", len(left) * max(right, 0))
        elif _sized(right) and _is_int(left):
            _check_size("'*'", len(right) * max(left, 0))
        elif _is_int(left) and _is_int(right):
            _check_int("'*'", left.bit_length() + right.bit_length())
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _check_int("'**'", right * math.log2(abs(left)))
    elif operator == "+" and _sized(left) and _sized(right):
        _check_size("'+'", len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_format_widths("'%'", left)


_PRINTF_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_NESTED_FORMAT_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")


def _check_format_widths(function: str, text: str) -> None:
    """A width or precision in a format string pads the result: ``'%999999999s'``, ``'{:>999999999}'``."""
    limit = _limits().max_output
    numbers = [n for match in _PRINTF_WIDTH.finditer(text) for n in match.groups() if n]
    numbers += re.findall(r"\d+", " ".join(_FORMAT_SPEC.findall(text)))
    if _NESTED_FORMAT_SPEC.search(text):
        numbers.append("*")
    for number in numbers:
        if number == "*":  # a width taken from an argument
            raise _LimitExceeded(f"{function}: widths from arguments are not allowed in templates")
        if int(number) > limit:
            _check_size(function, int(number))


def _text_size(value: object) -> int:
    return len(value) if isinstance(value, (str, bytes)) else len(str(value))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _replace_size(text: object, old: object, new: object, count: object = None) -> int:
    text, old, new = str(text), str(old), str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if _is_int(count) and 0 <= _int(count) < occurrences:
        occurrences = _int(count)
    return len(text) + occurrences * max(len(new) - len(old), 0)


def _indent_size(text: object, width: object = 4, *_: object, **__: object) -> int:
    per_line = len(width) if isinstance(width, str) else _int(width)
    return _text_size(text) + (str(text).count("\n") + 1) * max(per_line, 0)


def _pad_size(text: object, width: object = 0, *_: object, **__: object) -> int:
    return max(_text_size(text), _int(width))


def _expandtabs_size(text: object, tabsize: object = 8, *_: object, **__: object) -> int:
    return _text_size(text) + str(text).count("\t") * max(_int(tabsize), 0)


#: Predicted result size of the filters that can make their output much larger than their input.
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": _pad_size,
    "indent": _indent_size,
    "replace": _replace_size,
}
#: The same for str methods (``value.ljust(n)``), by method name.
_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": _pad_size,
    "ljust": _pad_size,
    "rjust": _pad_size,
    "zfill": _pad_size,
    "expandtabs": _expandtabs_size,
    "replace": _replace_size,
}


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    name = getattr(obj, "__name__", "")
    # The sandbox hands out str.format as a wrapper of the bound method.
    owner = getattr(obj, "__self__", None) or getattr(getattr(obj, "__wrapped__", None), "__self__", None)
    if isinstance(owner, str):
        if name in ("format", "format_map"):
            _check_format_widths(f"{name}()", owner)
        elif (size := _METHOD_SIZES.get(name)) is not None:
            with contextlib.suppress(TypeError):
                _check_size(f"{name}()", size(owner, *args, **kwargs))


def _budgeted_range(*args: int) -> range:
    numbers = range(*args)
    state = _STATE.get()
    limit = state.limits.max_range if state is not None else DEFAULT_LIMITS.max_range
    used = (state.range_used if state is not None else 0) + len(numbers)
    if used > limit:
        raise _LimitExceeded(f"range: more than {limit} items in one render (all range() calls together)")
    if state is not None:
        state.range_used = used
    return numbers


def _callable_name(obj: Any) -> str:
    name = getattr(obj, "__name__", None) or getattr(obj, "name", None)
    return name if isinstance(name, str) and name.isidentifier() else type(obj).__name__


class _GuardedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus size guards on operators and calls, and failures named."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        try:
            return super().call_binop(context, operator, left, right)
        except _PASS_THROUGH:
            raise
        except Exception as error:
            raise _SafeError(f"'{operator}' failed ({type(error).__name__})") from None

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_call(obj, args, kwargs)
        try:
            return super().call(context, obj, *args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as error:
            raise _SafeError(f"{_callable_name(obj)}() failed ({type(error).__name__})") from None


class _SafeUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose message shows a name only when the template's author wrote it: a name
    computed from a value (``values[password]``) would otherwise put the value in the message."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return "operation not allowed in the sandbox"
        state = _STATE.get()
        name = self._undefined_name
        shown = repr(name) if state is not None and state.can_show(name) else "(a computed name)"
        if self._undefined_obj is jinja2.utils.missing:
            return f"{shown} is undefined"
        obj = self._undefined_obj
        kind = "str" if isinstance(obj, str) else type(obj).__name__
        return f"'{kind} object' has no attribute or item {shown}"


# -- values and filters ----------------------------------------------------------------------------------


class _SecretText(str):  # noqa: SLOT000 - str subclasses cannot have slots
    """A fetched value as text; keeps its original bytes, so ``b64encode`` of a binary value is exact.

    The attribute starts with an underscore: the sandbox does not let templates read it.
    """

    _raw: bytes

    def __new__(cls, raw: bytes) -> Self:
        text = super().__new__(cls, raw.decode("utf-8", errors="replace"))
        text._raw = raw
        return text


def _b64encode(value: object) -> str:
    if isinstance(value, _SecretText):
        return base64.b64encode(value._raw).decode()  # noqa: SLF001 - hidden from templates
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, str):
        return base64.b64encode(value.encode()).decode()
    raise _SafeError(f"b64encode: expects text, got {type(value).__name__}")


def _b64decode(value: object) -> str:
    if not isinstance(value, (str, bytes)):
        raise _SafeError(f"b64decode: expects text, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value)
    except (binascii.Error, ValueError):
        raise _SafeError("b64decode: the input is not valid base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _SafeError(
            "b64decode: the result is not UTF-8 text; to write bytes into the Secret, render the base64 "
            "text itself under target.template.binaryData (the operator decodes it)"
        ) from None


def _fromjson(value: object) -> Any:
    if not isinstance(value, (str, bytes)):
        raise _SafeError(f"fromjson: expects text, got {type(value).__name__}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise _SafeError(
            f"fromjson: the input is not valid JSON (line {error.lineno}, column {error.colno})"
        ) from None
    except (ValueError, RecursionError):
        raise _SafeError("fromjson: the input is not valid JSON") from None


def _guarded(kind: str, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter or test whose failure names it, and whose result size is checked first when it can grow."""
    size = _FILTER_SIZES.get(name) if kind == "filter" else None
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if size is not None:
            with contextlib.suppress(TypeError):
                _check_size(name, size(*args[skip:], **kwargs))
        if name == "format" and len(args) > skip and isinstance(args[skip], str):
            _check_format_widths(name, args[skip])
        try:
            return function(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as error:
            raise _SafeError(f"{kind} {name!r} failed ({type(error).__name__})") from None

    return wrapper


def _environment() -> _GuardedSandbox:
    env = _GuardedSandbox(undefined=_SafeUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters.update(b64encode=_b64encode, b64decode=_b64decode, fromjson=_fromjson)
    env.filters = {name: _guarded("filter", name, f) for name, f in env.filters.items()}
    env.tests = {name: _guarded("test", name, cast("Callable[..., Any]", f)) for name, f in env.tests.items()}
    env.globals["range"] = _budgeted_range
    env.globals.pop("lipsum", None)  # lorem ipsum of any length: of no use in a Secret
    return env


_ENV = _environment()


# -- checking and rendering ------------------------------------------------------------------------------


def _label(name: str, binary: bool) -> str:
    return f"template for binaryData key {name!r}" if binary else f"template for key {name!r}"


def syntax_error(source: str) -> tuple[int, str] | None:
    """(line, message) of the first syntax error of a template, None when it compiles."""
    try:
        _ENV.parse(source)
    except jinja2.TemplateSyntaxError as error:
        return error.lineno, error.message or "syntax error"
    except RecursionError:
        return 1, "too deeply nested"
    return None


def check_templates(templates: Mapping[str, str], binary_templates: Mapping[str, str] | None = None) -> None:
    """Parse without rendering: a syntax error is reported before anything is fetched."""
    for binary, group in ((False, templates), (True, binary_templates or {})):
        for name, source in group.items():
            if (found := syntax_error(source)) is not None:
                line, message = found
                raise TemplateError(f"{_label(name, binary)}: line {line}: {message}")


def render_templates(
    templates: Mapping[str, str],
    values: Mapping[str, bytes],
    *,
    binary_templates: Mapping[str, str] | None = None,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> dict[str, bytes]:
    """The Secret's data: ``templates`` rendered as UTF-8 text, ``binary_templates`` rendered as base64
    text and decoded. Raises TemplateError naming the key and the problem, never a value."""
    texts = {name: _SecretText(value) for name, value in values.items()}
    context: dict[str, Any] = {**texts, "values": texts}
    groups = ((False, templates), (True, binary_templates or {}))
    sources = "\n".join(source for _, group in groups for source in group.values())
    state = _RenderState(limits=limits, sources=sources, texts=frozenset(str(t) for t in texts.values()))
    rendered: dict[str, bytes] = {}
    total = 0
    with _render_state(state):
        for binary, group in groups:
            for name, source in group.items():
                try:
                    output = _render_one(source, context, limits.max_output - total)
                    data = _decode_binary(output) if binary else output.encode("utf-8")
                except _PASS_THROUGH as error:
                    raise TemplateError(f"{_label(name, binary)}: {_message(error)}") from None
                except UnicodeEncodeError:
                    raise TemplateError(
                        f"{_label(name, binary)}: the rendered text is not valid UTF-8"
                    ) from None
                except Exception as error:
                    # Anything else (a failed conversion) may quote a value: keep only the kind.
                    raise TemplateError(
                        f"{_label(name, binary)}: rendering failed ({type(error).__name__})"
                    ) from None
                total += len(data)
                if total > limits.max_output:
                    raise TemplateError(f"{_label(name, binary)}: {_output_over(limits)}")
                rendered[name] = data
    return rendered


def _output_over(limits: RenderLimits) -> str:
    return (
        f"the rendered data is over the limit of {limits.max_output} bytes per Secret (--template-max-output)"
    )


#: Compiled templates by source; small ones only, so the cache stays small.
_CACHED_SOURCE_MAX = 16 << 10


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _render_one(source: str, context: Mapping[str, Any], budget: int) -> str:
    """Render, counting the output as it is produced: a loop that prints too much stops at the limit."""
    template = _compiled(source) if len(source) <= _CACHED_SOURCE_MAX else _ENV.from_string(source)
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > budget:
            raise _LimitExceeded(_output_over(_limits()))
        chunks.append(chunk)
    return "".join(chunks)


def _decode_binary(text: str) -> bytes:
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _SafeError(
            "the rendered text is not valid base64 (binaryData templates render base64, which is decoded "
            "into the Secret)"
        ) from None


def _message(error: BaseException) -> str:  # noqa: PLR0911 - one message per kind
    if isinstance(error, _SafeError):
        return error.message
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"line {error.lineno}: {error.message}"
    if isinstance(error, jinja2.UndefinedError):
        return str(error.message)  # built by _SafeUndefined: names only the author's own names
    if isinstance(error, SecurityError):
        return "operation not allowed in the sandbox"
    if isinstance(error, MemoryError):
        return f"out of memory (a render may use {_limits().memory_mib} MiB, --template-memory-mib)"
    if isinstance(error, RecursionError):
        return "too deeply nested (recursion limit)"
    return f"rendering failed ({type(error).__name__})"
