from __future__ import annotations

import pytest

from managed_secrets.core.render import check_templates, render_templates
from managed_secrets.core.values import extract_fields, pick_property
from managed_secrets.errors import PropertyNotFound, TemplateError
from managed_secrets.models.duration import format_duration, parse_duration

CANARY = "canary-7f3e9b-value"


def test_pick_property_top_level_nested_and_non_string() -> None:
    raw = b'{"user": "app", "db": {"port": 5432, "hosts": ["a", "b"]}, "a.b": "dotted"}'
    assert pick_property(raw, "k", "user") == b"app"
    assert pick_property(raw, "k", "db.port") == b"5432"
    assert pick_property(raw, "k", "db.hosts.1") == b"b"
    assert pick_property(raw, "k", "a.b") == b"dotted"
    assert pick_property(raw, "k", "db") == b'{"port":5432,"hosts":["a","b"]}'


def test_missing_property_names_key_and_property_but_not_the_value() -> None:
    raw = f'{{"password": "{CANARY}"}}'.encode()
    with pytest.raises(PropertyNotFound) as info:
        pick_property(raw, "app/db", "username")
    assert "app/db" in str(info.value)
    assert "username" in str(info.value)
    assert CANARY not in str(info.value)


def test_property_of_a_non_json_value() -> None:
    with pytest.raises(PropertyNotFound, match="not JSON"):
        pick_property(CANARY.encode(), "k", "x")
    with pytest.raises(PropertyNotFound, match="not a JSON object"):
        pick_property(b'["a"]', "k", "x")


def test_extract_fields() -> None:
    assert extract_fields(b'{"a": "1", "b": 2, "c": {"d": true}}', "k") == {
        "a": b"1",
        "b": b"2",
        "c": b'{"d":true}',
    }


def test_templates_render_values_and_filters() -> None:
    out = render_templates(
        {"url": "u={{ user }} p={{ values['pass-word'] }} {{ user | b64encode }}"},
        {"user": b"app", "pass-word": b"pw"},
    )
    assert out == {"url": b"u=app p=pw YXBw"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ user.__class__.__mro__ }}", "template for key"),
        ("{{ password | int + 'x' }}", "'+' failed (TypeError)"),
    ],
)
def test_template_errors_never_quote_values(template: str, expected: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_templates({"out": template}, {"user": b"app", "password": CANARY.encode()})
    assert expected in str(info.value)
    assert CANARY not in str(info.value)


def test_template_syntax_error_is_found_before_fetching() -> None:
    with pytest.raises(TemplateError, match="line 1"):
        check_templates({"out": "{{ unclosed "})


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(TemplateError):
        render_templates({"out": "{{ ''.__class__.__subclasses__() }}"}, {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("30s", 30), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "1d", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("0", "30s", "1h", "1h30m", "2m5s"):
        assert format_duration(parse_duration(text)) == text
