"""Pure logic of exec/render: overrides merging, env/file split, formats, CI masks, the Vault token chain."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from managed_secrets.core.ports import SecretObject
from managed_secrets.errors import AuthFailed, InvalidSpec
from managed_secrets.local.credentials import caller_vault_token
from managed_secrets.local.output import Format, github_masks, render_text, split
from managed_secrets.local.overrides import OverridesError, VaultTokenSource, load_overrides, merge_patch
from managed_secrets.local.resolve import ResolvedSecret


def resolved(name: str, data: dict[str, bytes], type_: str = "Opaque") -> ResolvedSecret:
    secret = SecretObject(
        "default",
        name,
        type_,
        data,
        labels={"team": "a", "managedsecrets.io/managed": "true"},
        annotations={"managedsecrets.io/owner-proof": "x"},
    )
    return ResolvedSecret("f.yaml:1", f"default/{name}", secret)


def test_merge_patch_follows_rfc_7386() -> None:
    spec = {"aws": {"region": "eu-west-1", "auth": {"secretRef": {}}}}
    patched = merge_patch(spec, {"aws": None, "vault": {"server": "http://127.0.0.1:8200"}})
    assert patched == {"vault": {"server": "http://127.0.0.1:8200"}}
    assert merge_patch(spec, {"aws": {"auth": None, "role": "ci"}}) == {
        "aws": {"region": "eu-west-1", "role": "ci"}
    }
    assert spec == {"aws": {"region": "eu-west-1", "auth": {"secretRef": {}}}}  # the input is not changed


def test_overrides_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"backends": [{"name": "v", "vaultToken": {"env": "A", "file": "b"}}]}))
    with pytest.raises(OverridesError, match="exactly one of env, file"):
        load_overrides(str(path))
    path.write_text(yaml.safe_dump({"backend": []}))
    with pytest.raises(OverridesError, match="backend"):
        load_overrides(str(path))


def test_split_puts_file_shaped_keys_in_files_and_refuses_conflicts() -> None:
    parts = split([resolved("a", {"PASSWORD": b"p", "tls.crt": b"PEM", "BIN": b"\xff\x00"})])
    assert parts.env == {"PASSWORD": "p"}
    assert sorted((s, k) for s, k, _ in parts.files) == [("a", "BIN"), ("a", "tls.crt")]
    assert split([resolved("a", {"X": b"1"}), resolved("b", {"X": b"1"})]).env == {"X": "1"}
    with pytest.raises(InvalidSpec, match="X is set by both ManagedSecret default/a and default/b") as caught:
        split([resolved("a", {"X": b"v-alpha"}), resolved("b", {"X": b"v-beta"})])
    assert "v-alpha" not in str(caught.value)
    assert "v-beta" not in str(caught.value)


def test_formats_mask_unless_revealed_and_quote_safely() -> None:
    value = 'it\'s "$HOME"\nline2'
    secrets = [resolved("a", {"V": value.encode(), "k.json": b"{}"})]
    env, notes = render_text(secrets, Format.ENV, reveal=True)
    assert shlex.split(env.removeprefix("export V=")) == [value]
    assert notes == ["a/k.json: not an environment variable (exec writes it to a file); left out"]
    dotenv, _ = render_text(secrets, Format.DOTENV, reveal=True)
    assert dotenv == 'V="it\'s \\"\\$HOME\\"\\nline2"\n'
    for fmt in Format:
        masked, _ = render_text(secrets, fmt, reveal=False)
        assert "HOME" not in masked
        assert "line2" not in masked
    document = json.loads(render_text([resolved("a", {"B": b"\xff"})], Format.JSON, reveal=True)[0])
    assert document == {"a": {"B": {"base64": "/w=="}}}
    (secret,) = yaml.safe_load_all(render_text(secrets, Format.YAML_SECRET, reveal=True)[0])
    assert secret["metadata"] == {"name": "a", "namespace": "default", "labels": {"team": "a"}}


def test_github_masks_every_line_and_the_base64_form() -> None:
    masks = github_masks([resolved("a", {"K": b"first\nsecond"})])
    assert masks == ["::add-mask::first", "::add-mask::second", "::add-mask::Zmlyc3QKc2Vjb25k"]


def test_vault_token_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VAULT_CONFIG_PATH", raising=False)
    with pytest.raises(AuthFailed, match="no Vault token"):
        caller_vault_token(None, {})
    (tmp_path / ".vault-token").write_text("from-file\n")
    assert caller_vault_token(None, {}) == "from-file"
    assert caller_vault_token(None, {"VAULT_TOKEN": "from-env"}) == "from-env"
    helper = tmp_path / "helper"
    helper.write_text('#!/bin/sh\n[ "$1" = get ] && echo from-helper\n')
    helper.chmod(0o700)
    (tmp_path / ".vault").write_text(f'token_helper = "{helper}"\n')
    assert caller_vault_token(None, {}) == "from-helper"
    helper.write_text("#!/bin/sh\necho secret-looking-output; exit 3\n")
    with pytest.raises(AuthFailed, match=r"exit 3") as caught:
        caller_vault_token(None, {})
    assert "secret-looking" not in str(caught.value)
    assert caller_vault_token(VaultTokenSource(env="MINE"), {"MINE": "mine"}) == "mine"
    with pytest.raises(AuthFailed, match=r"\$MINE"):
        caller_vault_token(VaultTokenSource(env="MINE"), {})
