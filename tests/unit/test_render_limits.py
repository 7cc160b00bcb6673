"""Template guards in the sandbox: common abuse fails at once with a message naming the limit, binary
output through binaryData, and failures that name the function but never a value."""

from __future__ import annotations

import base64
import time

import pytest

from managed_secrets.core.render import RenderLimits, check_templates, render_templates, syntax_error
from managed_secrets.errors import TemplateError
from managed_secrets.models.managedsecret import TargetTemplate

CANARY = "canary-5d1c0a-value"
VALUES = {
    "user": b"app",
    "password": CANARY.encode(),
    "blob": bytes(range(256)),
    "blob_b64": base64.b64encode(bytes(range(256))),
    "doc": b'{"user": "app", "port": 5432}',
}


def render_error(template: str, limits: RenderLimits | None = None) -> str:
    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render_templates({"out": template}, VALUES, limits=limits or RenderLimits())
    assert time.monotonic() - started < 1.0, "a guard must fail fast, before the work"
    message = info.value.message
    assert CANARY not in message
    return message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'x' * 10**9 }}", "'*': the result would be 1000000000 characters"),
        ("{{ 10**9 * 'x' }}", "'*': the result would be 1000000000"),
        ("{{ [1, 2] * 10**8 }}", "'*': the result would be 200000000"),
        ("{{ password * 100000 }}", "'*'"),
        ("{{ 2 ** (10 ** 9) }}", "'**': the result would exceed 65536 bits"),
        ("{% set a = 'x' * 1000000 %}{{ a + a }}", "'+': the result would be 2000000"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "range: more than 100000 items in one render",
        ),
        ("{% for i in range(10**9) %}{% endfor %}", "range: more than 100000 items"),
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "over the limit of 1048576 bytes"),
        ("{{ 'x' | center(10**9) }}", "center: the result would be"),
        ("{{ ('x\n' * 100000) | indent(100) }}", "indent: the result would be"),
        ("{{ ('x' * 100000) | replace('x', 'y' * 100) }}", "replace: the result would be"),
        ("{{ 'x'.ljust(10**9) }}", "ljust(): the result would be"),
        ("{{ 'x'.zfill(10**9) }}", "zfill(): the result would be"),
        ("{{ ('\t' * 1000).expandtabs(10**6) }}", "expandtabs(): the result would be"),
        ("{{ '{:>999999999}'.format(1) }}", "format(): the result would be 999999999"),
        ("{{ '{:{}}'.format(1, 10**9) }}", "format(): widths from arguments are not allowed"),
        ("{{ '%999999999s' % 'a' }}", "'%': the result would be 999999999"),
        ("{{ '%*s' % (10**9, 'a') }}", "'%': widths from arguments are not allowed"),
        ("{{ '%999999999s' | format('a') }}", "format: the result would be"),
        ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    ],
)
def test_guards_fail_fast_naming_the_limit(template: str, expected: str) -> None:
    assert expected in render_error(template)


def test_the_output_limit_counts_all_keys_of_the_secret() -> None:
    limits = RenderLimits(max_output=100)
    templates = {"a": "{{ 'x' * 60 }}", "b": "{{ 'y' * 60 }}"}
    with pytest.raises(TemplateError, match=r"template for key 'b': .*over the limit of 100 bytes"):
        render_templates(templates, {}, limits=limits)
    assert render_templates({"a": "{{ 'x' * 60 }}"}, {}, limits=limits) == {"a": b"x" * 60}


def test_the_range_budget_is_per_render() -> None:
    limits = RenderLimits(max_range=10)
    template = {"out": "{% for i in range(6) %}{% endfor %}"}
    for _ in range(3):  # a budget left over from one render does not carry into the next
        render_templates(template, {}, limits=limits)
    with pytest.raises(TemplateError, match="range: more than 10 items"):
        render_templates(
            {"a": "{% for i in range(6) %}{% endfor %}", "b": "{{ range(6) | list }}"}, {}, limits=limits
        )


def test_legitimate_templates_still_render() -> None:
    out = render_templates(
        {
            "url": "postgres://{{ user }}:{{ values['password'] }}@db:{{ (doc | fromjson).port }}/app",
            "auth": "{{ (user ~ ':' ~ password) | b64encode }}",
            "list": "{% for i in range(3) %}{{ i }}{% endfor %}",
            "pad": "{{ user.ljust(5, '.') }}|{{ '%05d' % 42 }}|{{ '{:>6}'.format(user) }}",
            "back": "{{ user | b64encode | b64decode }}",
        },
        VALUES,
    )
    assert out["url"] == f"postgres://app:{CANARY}@db:5432/app".encode()
    assert base64.b64decode(out["auth"]) == f"app:{CANARY}".encode()
    assert out["list"] == b"012"
    assert out["pad"] == b"app..|00042|   app"
    assert out["back"] == b"app"


def test_binary_data_writes_bytes() -> None:
    out = render_templates(
        {"text": "{{ user }}"},
        VALUES,
        binary_templates={
            "from-base64": "{{ blob_b64 }}",
            "re-encoded": "{{ blob | b64encode }}",  # b64encode of a value encodes its original bytes
            "wrapped": "{{ blob_b64[:40] }}\n  {{ blob_b64[40:] }}\n",  # whitespace in base64 is allowed
        },
    )
    assert out == {
        "text": b"app",
        "from-base64": bytes(range(256)),
        "re-encoded": bytes(range(256)),
        "wrapped": bytes(range(256)),
    }


def test_binary_data_must_render_base64() -> None:
    with pytest.raises(TemplateError) as info:
        render_templates({}, VALUES, binary_templates={"ks": "{{ password }}!"})
    assert "template for binaryData key 'ks': the rendered text is not valid base64" in info.value.message
    assert CANARY not in info.value.message


def test_b64decode_of_binary_names_the_function_and_the_way_out() -> None:
    message = render_error("{{ blob_b64 | b64decode }}")
    assert "b64decode: the result is not UTF-8 text" in message
    assert "target.template.binaryData" in message
    assert "UnicodeDecodeError" not in message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ password | b64decode }}", "b64decode: the input is not valid base64"),
        ("{{ password | fromjson }}", "fromjson: the input is not valid JSON (line 1, column 1)"),
        ("{{ 42 | b64encode }}", "b64encode: expects text, got int"),
        ("{{ password.split(1) }}", "split() failed (TypeError)"),
        ("{{ password | int + 'x' }}", "'+' failed (TypeError)"),
        ("{{ 1 is divisibleby 0 }}", "test 'divisibleby' failed (ZeroDivisionError)"),
        ("{{ password | float | round(password) }}", "filter 'round' failed"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "too deeply nested"),
        ("{{ ''.__class__.__subclasses__() }}", "operation not allowed in the sandbox"),
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ user.nothere }}", "'str object' has no attribute or item 'nothere'"),
    ],
)
def test_failures_name_the_function_never_the_value(template: str, expected: str) -> None:
    assert expected in render_error(template)


def test_a_name_computed_from_a_value_is_not_shown() -> None:
    """``values[password]`` looks up the secret itself as a key: Jinja would print it as the missing name."""
    message = render_error("{{ values[password] }}")
    assert message == "template for key 'out': 'dict object' has no attribute or item (a computed name)"
    message = render_error("{{ user[password] }}")
    assert "(a computed name)" in message


def test_syntax_errors_name_the_key_and_line() -> None:
    with pytest.raises(TemplateError, match=r"template for binaryData key 'ks': line 2: unexpected '}'"):
        check_templates({"ok": "{{ user }}"}, {"ks": "a\n{{ user }"})
    assert syntax_error("{{ user }}") is None
    assert syntax_error("{% for x in y %}") is not None
    assert syntax_error("{{ " + "(" * 100_000 + " }}") is not None  # too deep for the parser: no crash


def test_data_and_binary_data_cannot_share_a_key() -> None:
    with pytest.raises(ValueError, match="'k' is in both data and binaryData"):
        TargetTemplate.model_validate({"data": {"k": "a"}, "binaryData": {"k": "b"}})
