"""`managed-secrets check`: examples/ pass, every tests/fixtures/invalid/*.yaml fails naming its field."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from managed_secrets import check as check_module
from managed_secrets.check import Checker, CrdInfo, check_files, format_path, load_crds, provider_config_model
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
