"""`estafeta accounts keys`: create a key with a scope, list keys with their scopes, revoke one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estafeta.cli import app


def test_keys_are_created_with_a_scope_listed_and_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESTAFETA_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    assert runner.invoke(app, ["accounts", "create", "acme"]).exit_code == 0
    created = runner.invoke(app, ["accounts", "keys", "create", "acme", "--scope", "send", "--name", "shop"])
    assert created.exit_code == 0, created.output
    prefix = re.search(r"est_([0-9a-f]+)_", created.output)
    assert prefix is not None and "(send)" in created.output
    listed = runner.invoke(app, ["accounts", "keys", "list", "acme"], env={"COLUMNS": "200"})
    assert re.search(rf"{prefix[1]}\s.*shop\s.*send", listed.output), listed.output
    assert runner.invoke(app, ["accounts", "keys", "revoke", "acme", prefix[1]]).exit_code == 0
    again = runner.invoke(app, ["accounts", "keys", "revoke", "acme", prefix[1]])
    assert again.exit_code != 0 and "no active API key" in again.output
    assert runner.invoke(app, ["accounts", "keys", "create", "acme", "--scope", "admin"]).exit_code != 0


def test_admin_keys_are_listed_and_revoked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTAFETA_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    created = runner.invoke(app, ["admin", "create-key", "--name", "oncall"])
    assert created.exit_code == 0, created.output
    prefix = re.search(r"estadm_([0-9a-f]+)_", created.output)
    assert prefix is not None
    listed = runner.invoke(app, ["admin", "list-keys"], env={"COLUMNS": "200"})
    assert re.search(rf"{prefix[1]}\s.*oncall", listed.output), listed.output
    assert "_" + prefix[1] + "_" not in listed.output  # the prefix alone, never the token
    revoked = runner.invoke(app, ["admin", "revoke-key", prefix[1]])
    assert revoked.exit_code == 0, revoked.output
    again = runner.invoke(app, ["admin", "revoke-key", prefix[1]])
    assert again.exit_code != 0 and "no active admin key" in again.output
