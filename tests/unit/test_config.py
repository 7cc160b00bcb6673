"""Where the operator keeps its own state: flag, then environment, then the pod's service account."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from managed_secrets import cli
from managed_secrets.config import OperatorConfig, default_instance, default_operator_namespace
from managed_secrets.runtime.factory import StartupError


@pytest.mark.parametrize(
    ("environ", "file_content", "expected"),
    [
        ({"MANAGED_SECRETS_OPERATOR_NAMESPACE": "ops", "POD_NAMESPACE": "pod"}, "sa", "ops"),
        ({"POD_NAMESPACE": "pod"}, "sa", "pod"),
        ({"POD_NAMESPACE": "  "}, "sa\n", "sa"),
        ({}, "sa\n", "sa"),
        ({}, None, "managed-secrets-system"),
        ({}, "", "managed-secrets-system"),
    ],
)
def test_default_operator_namespace(
    tmp_path: Path, environ: dict[str, str], file_content: str | None, expected: str
) -> None:
    sa_file = tmp_path / "namespace"
    if file_content is not None:
        sa_file.write_text(file_content)
    assert default_operator_namespace(environ, sa_file) == expected


@pytest.fixture
def quiet_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` as a process runs it, minus what would change this test process (its logging, malloc)."""
    monkeypatch.setattr(cli, "limit_malloc_arenas", lambda: None)
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: None)


@pytest.mark.usefixtures("quiet_main")
def test_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANAGED_SECRETS_OPERATOR_NAMESPACE", "from-env")
    seen: list[OperatorConfig] = []

    async def fake_run(config: OperatorConfig, **_: object) -> None:
        seen.append(config)

    monkeypatch.setattr("managed_secrets.handlers.operator.run_operator", fake_run)
    assert cli.main(["run", "--operator-namespace", "from-flag"]) == 0
    assert cli.main(["run"]) == 0
    assert [c.operator_namespace for c in seen] == ["from-flag", "from-env"]


@pytest.mark.usefixtures("quiet_main")
def test_a_startup_error_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing_run(config: OperatorConfig, **_: object) -> None:
        raise StartupError(f"cannot read or create the HMAC key Secret {config.operator_namespace}/x")

    monkeypatch.setattr("managed_secrets.handlers.operator.run_operator", failing_run)
    assert cli.main(["run", "--operator-namespace", "ghost"]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "cannot start: cannot read or create the HMAC key Secret ghost/x"
    ]
    assert errors[0].exc_info is None  # one line, no traceback


def test_run_help_documents_the_operator_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--operator-namespace" in text
    assert "MANAGED_SECRETS_OPERATOR_NAMESPACE" in text
    assert "POD_NAMESPACE" in text
    assert "exits with status 1" in text


@pytest.mark.usefixtures("quiet_main")
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MANAGED_SECRETS_BACKOFF_BASE", "0"),
        ("MANAGED_SECRETS_BACKOFF_BASE", "-5"),
        ("MANAGED_SECRETS_BACKOFF_BASE", "nan"),
        ("MANAGED_SECRETS_BACKOFF_BASE", "500"),  # above the default maximum of 300
        ("MANAGED_SECRETS_BACKOFF_MAX", "inf"),
        ("MANAGED_SECRETS_WORKERS", "0"),
        ("MANAGED_SECRETS_METRICS_PORT", "many"),
        ("MANAGED_SECRETS_BACKEND_VALIDATION_INTERVAL", "-1"),
        ("MANAGED_SECRETS_BACKEND_VALIDATION_INTERVAL", "nan"),
    ],
)
def test_a_bad_setting_is_a_usage_error_not_a_hot_loop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    """A zero or negative backoff would retry failures against the store in a tight loop."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "managed-secrets: error: " in err
    assert variable.removeprefix("MANAGED_SECRETS_").split("_")[-1].lower() in err.lower()


def test_sane_settings_pass() -> None:
    assert OperatorConfig(backoff_base=0.3, backoff_max=2.0, workers=1).backoff_max == 2.0


def test_backend_validation_interval_from_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig().backend_validation_interval == 300.0
    monkeypatch.setenv("MANAGED_SECRETS_BACKEND_VALIDATION_INTERVAL", "60")
    assert OperatorConfig.from_env().backend_validation_interval == 60.0
    args = cli._parser().parse_args(["run", "--backend-validation-interval", "0"])
    assert cli._config(args).backend_validation_interval == 0.0


def test_instance_is_the_pod_name_unless_set() -> None:
    assert default_instance({"MANAGED_SECRETS_INSTANCE": "a", "POD_NAME": "pod-1"}) == "a"
    assert default_instance({"POD_NAME": " pod-1 "}) == "pod-1"
    assert default_instance({}) == (socket.gethostname() or "managed-secrets")


def test_backend_status_can_be_left_to_another_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig().backend_status
    monkeypatch.setenv("MANAGED_SECRETS_BACKEND_STATUS", "false")
    assert not OperatorConfig.from_env().backend_status
    monkeypatch.delenv("MANAGED_SECRETS_BACKEND_STATUS")
    assert not cli._config(cli._parser().parse_args(["run", "--no-backend-status"])).backend_status
    assert cli._config(cli._parser().parse_args(["run"])).backend_status
