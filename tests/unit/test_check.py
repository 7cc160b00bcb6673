"""`managed-secrets check`: examples/ pass, every tests/fixtures/invalid/*.yaml fails naming its field."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from managed_secrets import check as check_module
from managed_secrets.check import (
    Checker,
    CrdInfo,
    check_files,
    format_path,
    load_crds,
    provider_config_model,
)
from managed_secrets.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INVALID = sorted((REPO / "tests" / "fixtures" / "invalid").glob("*.yaml"))
#: `# expect: spec.a.b: Required value` names the field before the first ": "
FIELD_PREFIX = re.compile(r"^((?:spec|metadata)[\w.\[\]]*): ")


def run_check(*paths: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_files([str(p) for p in paths], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: the first line must be '# expect: <message>'"
    return first.removeprefix("# expect: ").strip()


def test_examples_pass() -> None:
    code, out, err = run_check(*sorted(EXAMPLES.glob("*.yaml")))
    assert code == 0, out
    assert out == ""
    assert "0 errors" in err
    # Every example of ours was checked (Secrets and Deployments in the same files are skipped).
    assert re.search(r"^(\d+) managedsecrets.io resources", err, re.MULTILINE)
    assert int(err.split()[0]) >= 7


def test_a_folder_is_checked_recursively() -> None:
    code, _, err = run_check(EXAMPLES)
    assert code == 0
    assert int(err.split()[0]) >= 7


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_fixture_fails_naming_the_field(path: Path) -> None:
    expected = expectation(path)
    code, out, _ = run_check(path)
    assert code == 1, f"{path.name} passed the check"
    lines = out.splitlines()
    assert lines, "no problem printed"
    for line in lines:
        assert re.match(rf"^{re.escape(str(path))}:\d+: ", line), f"not file:line: {line}"
    field = FIELD_PREFIX.match(expected)
    if field is not None:
        # The API server's message starts with the field path: ours must name the same field.
        assert f"{field.group(1)}:" in out, f"{path.name}: field {field.group(1)} not named in:\n{out}"
    else:
        # A CEL rule's message (or a key name): ours carries the same text.
        assert expected in out, f"{path.name}: {expected!r} not in:\n{out}"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_line_points_at_the_offending_field(path: Path) -> None:
    """The reported line holds the field the message names (or, for a missing field, its parent)."""
    code, out, _ = run_check(path)
    assert code == 1
    source = path.read_text().splitlines()
    first = out.splitlines()[0]
    line_number = int(first.split(":")[1])
    where = first.split(": ")[2] if first.count(": ") >= 2 else ""
    field = where.rsplit(".", 1)[-1].split("[")[0]
    line = source[line_number - 1]
    if "Required value" in first:
        return  # the field is missing; the line is its parent's
    assert field in line or line.lstrip().startswith("-"), f"line {line_number} ({line!r}) for {first}"


def test_line_numbers_in_a_multi_document_file(tmp_path: Path) -> None:
    manifest = tmp_path / "two.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: skipped\n---\n"
        "apiVersion: managedsecrets.io/v1alpha1\n"
        "kind: ManagedSecret\n"
        "metadata:\n"
        "  name: app\n"
        "  namespace: team-a\n"
        "spec:\n"
        "  backendRef:\n"
        "    name: vault\n"
        "  refreshInterval: 1 hour\n"  # line 14
        "  data:\n"
        "    - secretKey: password\n"
        "      remoteRef:\n"
        "        key: app/db\n"
        "        propery: password\n"  # line 19: a typo
    )
    code, out, _ = run_check(manifest)
    assert code == 1
    assert f'{manifest}:14: ManagedSecret team-a/app: spec.refreshInterval: Invalid value: "1 hour"' in out
    assert f"{manifest}:19: ManagedSecret team-a/app: spec.data[0].remoteRef.propery: unknown field" in out


def test_wrong_version_unknown_kind_and_bad_yaml(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: managedsecrets.io/v1\nkind: ManagedSecret\nmetadata:\n  name: a\nspec: {}\n---\n"
        "apiVersion: managedsecrets.io/v1alpha1\nkind: SecretStore\nmetadata:\n  name: b\n---\n"
        "apiVersion: managedsecrets.io/v1alpha1\nkind: ClusterSecretBackend\nmetadata:\n  name: c\n  namespace: x\n"
        "spec:\n  aws:\n    region: eu-central-1\n---\n"
        "key: [unclosed\n"
    )
    code, out, _ = run_check(manifest)
    assert code == 1
    assert (
        f"{manifest}:1: ManagedSecret a: apiVersion: ManagedSecret is not served as managedsecrets.io/v1"
        in out
    )
    assert f"{manifest}:8: SecretStore b: kind: unknown kind 'SecretStore'" in out
    assert f"{manifest}:16: ClusterSecretBackend x/c: metadata.namespace: a cluster-scoped resource" in out
    assert f"{manifest}:22: invalid YAML" in out  # where the parser gave up


@pytest.mark.parametrize(
    ("fixture", "where", "message"),
    [
        ("ms-no-data", "ManagedSecret ms-no-data: spec:", "set at least one of data or dataFrom"),
        ("ms-duplicate-secret-key", "spec.data:", "'db-password' appears twice"),
        ("ms-bad-refresh-interval", "spec.refreshInterval:", "invalid duration"),
        ("sb-two-providers", "spec:", "set exactly one provider block (found: aws, vault)"),
        ("sb-bad-vault-version", "spec.vault.version:", "Input should be 'v1' or 'v2'"),
        ("sb-aws-missing-region", "spec.aws.region:", "Field required"),
    ],
)
def test_operator_rules_catch_what_the_schema_would_miss(
    monkeypatch: pytest.MonkeyPatch, fixture: str, where: str, message: str
) -> None:
    """With a schema that accepts anything, the operator's own parsing (the models the operator reconciles
    with, and the provider's config model) still rejects these, naming the field."""
    permissive = {
        kind: CrdInfo(kind, info.namespaced, {"v1alpha1": {"type": "object"}})
        for kind, info in load_crds().items()
    }
    monkeypatch.setattr(check_module, "load_crds", lambda: permissive)
    monkeypatch.setattr(check_module, "_validator", lambda kind, version: jsonschema.Draft7Validator({}))
    code, out, _ = run_check(REPO / "tests" / "fixtures" / "invalid" / f"{fixture}.yaml")
    assert code == 1
    assert where in out, out
    assert message in out, out


def test_provider_config_models_are_found() -> None:
    for provider in ("vault", "aws", "gcp", "azure"):
        model = provider_config_model(provider)
        assert model is not None, provider
        assert model.__name__.lower() == f"{provider}config"
    assert provider_config_model("nope") is None


def test_crds_are_package_data() -> None:
    assert sorted(load_crds()) == ["ClusterSecretBackend", "ManagedSecret", "SecretBackend"]


def test_cel_rules_are_evaluated() -> None:
    assert Checker().cel.available, "cel-python is in the dev extra; without it CEL rules are skipped"


def test_format_path() -> None:
    assert format_path(("spec", "data", 0, "remoteRef", "key")) == "spec.data[0].remoteRef.key"
    assert format_path(()) == ""


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLES / "managedsecret-basic.yaml")]) == 0
    assert main(["check", str(INVALID[0])]) == 1
    assert str(INVALID[0]) in capsys.readouterr().out


def test_console_script() -> None:
    """The installed entry point, as a CI job runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "managed_secrets", "check", str(INVALID[0]), str(EXAMPLES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.startswith(f"{INVALID[0]}:")
    assert "1 error" in result.stderr


# -- hostile and malformed input: never a crash, one problem per bad document, the rest still checked ---------

GOOD_MS = (
    "apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata:\n  name: {name}\n  namespace: ns\n"
    "spec:\n  backendRef:\n    name: vault\n  refreshInterval: {interval}\n"
    "  data:\n    - secretKey: v\n      remoteRef:\n        key: app/db\n"
)


def ms_with_spec(spec_yaml: str, name: str = "bad") -> str:
    return (
        f"apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata:\n  name: {name}\n"
        f"  namespace: ns\nspec: {spec_yaml}\n"
    )


def billion_laughs(levels: int = 9, width: int = 9, *, kind: str = "ManagedSecret") -> str:
    lines = [
        f"apiVersion: {'managedsecrets.io/v1alpha1' if kind == 'ManagedSecret' else 'v1'}",
        f"kind: {kind}",
        "metadata:",
        "  name: lol",
        "  namespace: ns",
        "x0: &x0 [lol]",
    ]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*x{level - 1}"] * width)
        lines.append(f"x{level}: &x{level} [{refs}]")
    lines.append(f"spec: {{backendRef: {{name: *x{levels}}}}}")
    return "\n".join(lines) + "\n"


def merge_key_bomb(levels: int = 30) -> str:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: merge}", "m0: &m0 {a: 1}"]
    lines += [f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}]}}" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


MALFORMED: dict[str, str | bytes] = {
    "spec-is-a-list": ms_with_spec("[1, 2, 3]"),
    "spec-is-a-string": ms_with_spec("just text"),
    "spec-is-null": ms_with_spec("null"),
    "backendref-is-a-list": ms_with_spec(
        "{backendRef: [vault], data: [{secretKey: v, remoteRef: {key: k}}]}"
    ),
    "data-is-a-map": ms_with_spec("{backendRef: {name: vault}, data: {secretKey: v}}"),
    "data-item-is-a-string": ms_with_spec("{backendRef: {name: vault}, data: [oops]}"),
    "remoteref-is-a-list": ms_with_spec(
        "{backendRef: {name: vault}, data: [{secretKey: v, remoteRef: [k]}]}"
    ),
    "target-is-a-list": ms_with_spec(
        "{backendRef: {name: vault}, target: [x], data: [{secretKey: v, remoteRef: {key: k}}]}"
    ),
    "template-data-is-a-list": ms_with_spec(
        "{backendRef: {name: vault}, target: {template: {data: [a]}}, data: [{secretKey: v, remoteRef: {key: k}}]}"
    ),
    "rollout-is-a-string": ms_with_spec(
        "{backendRef: {name: vault}, rollout: yes, data: [{secretKey: v, remoteRef: {key: k}}]}"
    ),
    "metadata-is-a-list": "apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata: [a]\nspec: {}\n",
    "name-is-a-map": "apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata: {name: {a: b}}\nspec: {}\n",
    "namespace-is-a-number": "apiVersion: managedsecrets.io/v1alpha1\nkind: SecretBackend\nmetadata: {name: a, namespace: 7}\nspec: {}\n",
    "kind-is-a-list": "apiVersion: managedsecrets.io/v1alpha1\nkind: [ManagedSecret]\nmetadata: {name: a}\n",
    "apiversion-is-a-map": "apiVersion: {managedsecrets.io: v1alpha1}\nkind: ManagedSecret\nmetadata: {name: a}\n",
    "list-items-is-a-number": "apiVersion: v1\nkind: List\nitems: 5\n---\n"
    + GOOD_MS.format(name="after", interval="1ms"),
    "list-items-is-a-map": "apiVersion: v1\nkind: List\nitems: {a: b}\n---\n"
    + GOOD_MS.format(name="after", interval="1ms"),
    "overflowing-interval": GOOD_MS.format(name="big", interval="99999999999999999999h"),
    "sixty-four-digit-interval": GOOD_MS.format(name="big", interval="9" * 63 + "h"),
    "interval-is-infinity": GOOD_MS.format(name="inf", interval=".inf"),
    "interval-is-a-huge-int": GOOD_MS.format(name="huge", interval="9" * 5000),
    "interval-is-a-map": GOOD_MS.format(name="map", interval="{a: 1}"),
    "key-is-a-number": ms_with_spec(
        "{backendRef: {name: vault}, data: [{secretKey: v, remoteRef: {key: 12345678901234567890}}]}"
    ),
    "version-is-a-float": ms_with_spec(
        "{backendRef: {name: vault}, data: [{secretKey: v, remoteRef: {key: k, version: 1.5}}]}"
    ),
    "huge-name": "apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata: {name: "
    + "a" * 100_000
    + "}\nspec: {}\n",
    "billion-laughs": billion_laughs(),
    "billion-laughs-in-a-configmap": billion_laughs(kind="ConfigMap"),
    "merge-key-bomb": merge_key_bomb(),
    "recursive-alias": ms_with_spec("&loop {backendRef: {name: vault}, data: [*loop]}"),
    "nested-too-deep": ms_with_spec("{backendRef: {name: vault}, data: " + nested(100) + "}"),
    "nested-beyond-the-parser": ms_with_spec(nested(2_000)),
    "unhashable-key-then-a-good-document": "? [a, b]\n: c\n---\n"
    + GOOD_MS.format(name="after", interval="1ms"),
    "impossible-date-then-a-good-document": "date: 2001-02-30\n---\n"
    + GOOD_MS.format(name="after", interval="1ms"),
    "unclosed-flow": ms_with_spec("{backendRef: {name: vault"),
    "tabs-and-junk": "\t\x01\x02 not yaml: [\n",
    "nul-bytes": b"apiVersion: managedsecrets.io/v1alpha1\x00\x00\nkind: ManagedSecret\n",
    "not-utf8": b"apiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata: {name: caf\xe9}\n",
    "random-binary": bytes(range(256)) * 4,
    "utf16-with-bom": "apiVersion: v1\n".encode("utf-16"),
}


#: Cases whose documents are not recognisably ours (no problem for them is required, and none must crash).
NOT_OURS = {"apiversion-is-a-map", "tabs-and-junk-that-parses", "utf16-with-bom", "random-binary"}


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_document_is_reported_and_the_other_files_still_checked(
    tmp_path: Path, case: str
) -> None:
    bad = write(tmp_path / "a-bad.yaml", MALFORMED[case])
    later = write(tmp_path / "b-later.yaml", GOOD_MS.format(name="later", interval="1ms"))
    started = time.monotonic()
    code, out, err = run_check(bad, later)
    assert time.monotonic() - started < 20, "the check must stay fast whatever the input"
    assert code == 1
    lines = out.splitlines()
    for line in lines:
        assert re.match(rf"^{re.escape(str(tmp_path))}/[ab]-[a-z]+\.yaml:\d+: ", line), line
    if case not in NOT_OURS:
        assert any(line.startswith(f"{bad}:") for line in lines), out
    # The next file is checked all the same, and its problem is found.
    assert f"{later}:9: ManagedSecret ns/later: spec.refreshInterval: " in out, out
    assert "Traceback" not in out + err
    assert "could not be checked: unexpected" not in out, f"a bug of ours surfaced:\n{out}"
    assert re.search(r"resources? in 2 files", err), err


def test_a_bad_document_does_not_hide_the_next_one_in_the_same_file(tmp_path: Path) -> None:
    for case in (
        "list-items-is-a-number",
        "unhashable-key-then-a-good-document",
        "impossible-date-then-a-good-document",
    ):
        path = write(tmp_path / f"{case}.yaml", MALFORMED[case])
        code, out, _ = run_check(path)
        assert code == 1
        assert "ManagedSecret ns/after: spec.refreshInterval: " in out, (case, out)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("billion-laughs", "ManagedSecret ns/lol: not checked: aliases expand it to more than"),
        ("billion-laughs-in-a-configmap", "ConfigMap ns/lol: not checked: aliases expand it to more than"),
        ("merge-key-bomb", "ConfigMap merge: not checked: aliases expand it to more than"),
        ("recursive-alias", "ManagedSecret ns/bad: not checked: an alias refers to a node that contains it"),
        ("nested-too-deep", "ManagedSecret ns/bad: not checked: nested deeper than 64 levels"),
        ("nested-beyond-the-parser", "invalid YAML: nested too deeply to read"),
        ("not-utf8", ":3: not UTF-8 text (byte 0xe9 at offset"),
        ("nul-bytes", ":1: invalid YAML: unacceptable character #x0000"),
        ("interval-is-a-huge-int", ":9: invalid YAML: Exceeds the limit (4300 digits)"),
        ("impossible-date-then-a-good-document", ":1: invalid YAML: day is out of range for month"),
        ("overflowing-interval", "refreshInterval must be 0 (fetch once) or from 1s to 8760h"),
        (
            "interval-is-infinity",
            'spec.refreshInterval: Invalid value: "inf": spec.refreshInterval in body must be of type string',
        ),
        ("spec-is-a-list", 'spec: Invalid value: "array": spec in body must be of type object'),
        ("metadata-is-a-list", "ManagedSecret <unnamed>: metadata: Required value"),
        ("name-is-a-map", 'metadata.name: Invalid value: "object": must be a string'),
        ("namespace-is-a-number", 'metadata.namespace: Invalid value: "7": must be a string'),
        ("kind-is-a-list", "<invalid kind> a: kind: unknown kind '<invalid kind>'"),
        ("huge-name", "must be a lowercase DNS subdomain"),
    ],
)
def test_what_is_wrong_is_said_clearly(tmp_path: Path, case: str, expected: str) -> None:
    path = write(tmp_path / f"{case}.yaml", MALFORMED[case])
    code, out, _ = run_check(path)
    assert code == 1
    assert expected in out, out


def test_a_long_value_is_not_repeated_in_full(tmp_path: Path) -> None:
    path = write(tmp_path / "huge.yaml", MALFORMED["huge-name"])
    _, out, _ = run_check(path)
    assert len(out) < 2000, out[:300]


def test_empty_and_comment_only_files_are_clean(tmp_path: Path) -> None:
    files = [
        write(tmp_path / "empty.yaml", ""),
        write(tmp_path / "comments.yaml", "# nothing here\n"),
        write(tmp_path / "separators.yaml", "---\n---\n...\n"),
        write(tmp_path / "null.yaml", "null\n---\n~\n"),
        write(tmp_path / "scalars.yaml", "42\n---\njust a string\n---\n[a, list]\n"),
    ]
    code, out, err = run_check(*files)
    assert (code, out) == (0, "")
    assert "0 managedsecrets.io resources in 5 files: 0 errors" in err


def test_ordinary_anchors_are_fine(tmp_path: Path) -> None:
    """Anchors used to avoid repetition (not to explode) are checked as usual."""
    items = "".join(
        f"      - {{secretKey: k{i}, remoteRef: &r{i} {{key: app/db, property: p{i}}}}}\n" for i in range(50)
    )
    again = "".join(f"      - {{secretKey: c{i}, remoteRef: *r{i}}}\n" for i in range(50))
    path = write(
        tmp_path / "anchors.yaml",
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - apiVersion: managedsecrets.io/v1alpha1\n    kind: ManagedSecret\n    metadata: {name: a, namespace: ns}\n"
        "    spec:\n      backendRef: &b {name: vault}\n      data:\n"
        + items
        + "  - apiVersion: managedsecrets.io/v1alpha1\n    kind: ManagedSecret\n    metadata: {name: b, namespace: ns}\n"
        "    spec:\n      backendRef: *b\n      data:\n" + items.replace("&r", "&s") + again,
    )
    code, out, err = run_check(path)
    assert (code, out) == (0, ""), out
    assert "2 managedsecrets.io resources" in err


def test_a_bug_in_one_document_becomes_a_problem_of_that_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(check_module, "_structure_errors", explode)
    path = write(
        tmp_path / "two.yaml",
        GOOD_MS.format(name="first", interval="1h") + "---\n" + GOOD_MS.format(name="second", interval="1h"),
    )
    code, out, err = run_check(path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:1: ManagedSecret ns/first: could not be checked: unexpected KeyError",
        f"{path}:15: ManagedSecret ns/second: could not be checked: unexpected KeyError",
    ]
    assert "2 managedsecrets.io resources in 1 file: 2 errors" in err


def test_standard_input_that_is_not_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"kind: \xff\xfe\n")))
    code, out, _ = run_check("-")
    assert code == 1
    assert out.startswith("-:1: not UTF-8 text")


def test_template_syntax_errors_are_reported_per_key_and_other_files_still_checked(tmp_path: Path) -> None:
    """Every template is compiled offline; a template the parser cannot even handle does not stop the run."""
    bad = tmp_path / "a-bad.yaml"
    bad.write_text(
        "apiVersion: managedsecrets.io/v1alpha1\n"
        "kind: ManagedSecret\n"
        "metadata: {name: app, namespace: team-a}\n"
        "spec:\n"
        "  backendRef: {name: vault}\n"
        "  data: [{secretKey: pw, remoteRef: {key: app/db}}]\n"
        "  target:\n"
        "    template:\n"
        "      data:\n"
        '        ok: "{{ pw }}"\n'
        '        url: "{{ pw }"\n'
        '        deep: "{{ ' + "(" * 50_000 + ' }}"\n'
    )
    good = tmp_path / "b-good.yaml"
    good.write_text(bad.read_text().split("      data:\n")[0] + '      data: {ok: "{{ pw }}"}\n')
    also_bad = tmp_path / "c-also-bad.yaml"
    also_bad.write_text(bad.read_text().replace("name: app,", "name: other,"))
    code, out, err = run_check(bad, good, also_bad)
    assert code == 1
    lines = out.splitlines()
    assert (
        f"{bad}:11: ManagedSecret team-a/app: spec.target.template.data.url: template line 1: unexpected '}}'"
        in lines
    )
    assert any(
        line.startswith(f"{bad}:12: ManagedSecret team-a/app: spec.target.template.data.deep: ")
        for line in lines
    )
    assert any(line.startswith(f"{also_bad}:11: ManagedSecret team-a/other:") for line in lines)
    assert not any(str(good) in line for line in lines)
    assert "3 managedsecrets.io resources in 3 files: 4 errors" in err
