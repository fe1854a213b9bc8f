"""The audit log end to end: actions taken through the API, the command line and the dashboard appear with
the right actor and origin, and only platform operators read it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import event
from typer.testing import CliRunner

from estafeta.audit import SYSTEM, cli_actor
from estafeta.cli import app as cli_app
from tests.e2e.harness import Harness


async def _admin(h: Harness) -> tuple[httpx.AsyncClient, str]:
    key = await h.platform.core.admin_keys.create("ops", actor=SYSTEM)
    client = httpx.AsyncClient(
        base_url=h.platform.api_url, headers={"Authorization": f"Bearer {key.token}"}, timeout=30
    )
    return client, key.prefix


async def _audit(admin: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await admin.get("/v1/admin/audit", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_api_actions_are_recorded_with_the_key_that_took_them(harness: Harness) -> None:
    h = harness
    account_key = h.token.split("_")[1]
    created = await h.client.post("/v1/api-keys", json={"name": "deploy", "scope": "send"})
    assert created.status_code == 201, created.text
    prefix = created.json()["prefix"]
    assert (await h.client.delete(f"/v1/api-keys/{prefix}")).status_code == 204
    admin, admin_prefix = await _admin(h)
    async with admin:
        paused = await admin.post(
            f"/v1/admin/accounts/{h.account_id}/streams",
            json={"stream": "broadcast", "state": "paused", "reason": "complaints"},
        )
        assert paused.status_code == 200, paused.text
        listed = await admin.post("/v1/admin/suppressions", json={"address": "trap.test", "reason": "manual"})
        assert listed.status_code in (200, 201), listed.text

        newest = await _audit(admin)
        assert [(e["action"], e["actor"], e["origin"], e["account_id"], e["target"]) for e in newest[:5]] == [
            ("suppression.global_add", f"admin:{admin_prefix}", "127.0.0.1", None, "trap.test"),
            ("stream.pause", f"admin:{admin_prefix}", "127.0.0.1", h.account_id, "broadcast"),
            ("admin_key.create", "system", "system", None, admin_prefix),
            ("api_key.revoke", f"api:{account_key}", "127.0.0.1", h.account_id, prefix),
            ("api_key.create", f"api:{account_key}", "127.0.0.1", h.account_id, prefix),
        ]
        assert newest[1]["details"]["reason"] == "complaints"
        assert h.token not in json.dumps(newest)  # keys never reach the log

        keys = await _audit(admin, action="api_key", account_id=h.account_id)
        assert [e["action"] for e in keys] == ["api_key.revoke", "api_key.create", "api_key.create"]
        assert [e["action"] for e in await _audit(admin, actor=f"admin:{admin_prefix}")] == [
            "suppression.global_add",
            "stream.pause",
        ]
        first = await admin.get("/v1/admin/audit", params={"action": "api_key", "limit": 2})
        second = await admin.get(
            "/v1/admin/audit", params={"action": "api_key", "limit": 2, "cursor": first.json()["next_cursor"]}
        )
        assert [e["id"] for e in first.json()["data"] + second.json()["data"]] == [e["id"] for e in keys]
        assert second.json()["next_cursor"] is None

        moment = newest[0]["at"]
        assert await _audit(admin, until=moment, action="suppression") == []
        assert len(await _audit(admin, since=moment, action="suppression")) == 1
        assert await _audit(admin, since=moment, until=moment) == []
        assert (await admin.get("/v1/admin/audit", params={"cursor": "bm90IG91cnM"})).status_code == 422
        assert (await admin.get("/v1/admin/audit", params={"action": "Review;drop"})).status_code == 422

    refused = await h.client.get("/v1/admin/audit")  # an account's key, even a full one
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    async with httpx.AsyncClient(base_url=h.platform.api_url) as anonymous:
        assert (await anonymous.get("/v1/admin/audit")).status_code == 401


async def test_command_line_actions_are_recorded_with_the_os_user(harness: Harness) -> None:
    h = harness
    runner = CliRunner()
    env = {"ESTAFETA_DATABASE_URL": h.platform.settings.database_url, "COLUMNS": "250"}
    created = runner.invoke(cli_app, ["accounts", "keys", "create", "acme", "--name", "ci"], env=env)
    assert created.exit_code == 0, created.output
    made = runner.invoke(cli_app, ["admin", "create-key", "--name", "night shift"], env=env)
    assert made.exit_code == 0, made.output

    shown = runner.invoke(cli_app, ["admin", "audit", "--json", "--actor", cli_actor().name], env=env)
    assert shown.exit_code == 0, shown.output
    page = json.loads(shown.output)
    assert [(e["action"], e["origin"]) for e in page["data"]] == [
        ("admin_key.create", "cli"),
        ("api_key.create", "cli"),
    ]
    assert page["data"][0]["details"] == {"name": "night shift"} and page["next_before"] is None

    def audit_json(*args: str) -> dict[str, Any]:
        shown = runner.invoke(cli_app, ["admin", "audit", "--json", "--account", "acme", *args], env=env)
        assert shown.exit_code == 0, shown.output
        return dict(json.loads(shown.output))

    everything = audit_json()["data"]
    first = audit_json("--limit", "1")
    rest = audit_json("--before", str(first["next_before"]))["data"]
    assert len(everything) > 2 and first["data"] + rest == everything

    table = runner.invoke(cli_app, ["admin", "audit", "--action", "admin_key"], env=env)
    assert table.exit_code == 0 and "admin_key.create" in table.output and "api_key" not in table.output
    bad = runner.invoke(cli_app, ["admin", "audit", "--since", "yesterday"], env=env)
    assert bad.exit_code == 1 and "ISO 8601" in bad.output

    admin, _ = await _admin(h)
    async with admin:  # the API shows the same entries, written the same way (times RFC 3339)
        assert [e["actor"] for e in await _audit(admin, action="api_key.create", limit=1)] == [
            cli_actor().name
        ]
        assert await _audit(admin, account_id=h.account_id, limit=100) == everything
    assert all(datetime.fromisoformat(e["at"]).tzinfo is not None and "T" in e["at"] for e in everything)


async def test_the_dashboard_shows_the_log_to_operators_only(harness: Harness) -> None:
    h = harness
    users = h.platform.core.users
    operator = await users.create("ops@estafeta.test", "a long enough password", operator=True, actor=SYSTEM)
    owner = await users.create(
        "ana@acme.test", "a long enough password", account_id=h.account_id, role="owner", actor=SYSTEM
    )
    ops_session, owner_session = (
        await users.start_session(operator, origin="127.0.0.1"),
        await users.start_session(owner, origin="127.0.0.1"),
    )
    async with httpx.AsyncClient(
        base_url=h.platform.api_url, cookies={"estafeta_session": owner_session.cookie}
    ) as browser:
        created = await browser.post("/app/smtp-credentials", data={"csrf_token": owner_session.csrf_token})
        assert created.status_code == 201, created.text
        assert (await browser.get("/app/admin/audit")).status_code == 403
    async with httpx.AsyncClient(
        base_url=h.platform.api_url, cookies={"estafeta_session": ops_session.cookie}
    ) as browser:
        page = await browser.get("/app/admin/audit", params={"action": "smtp_credential", "account": "acme"})
        assert page.status_code == 200
        assert f"user:{owner.id}/ana@acme.test" in page.text and "smtp_credential.create" in page.text
        assert "user.create" not in page.text
        assert 'href="/app/admin/audit" aria-current="page"' in page.text  # in the operators' navigation
        signed_in = await browser.get("/app/admin/audit", params={"action": "user.sign_in"})
        assert (
            signed_in.text.count("<code>user.sign_in</code>") == 2 and "ops@estafeta.test" in signed_in.text
        )
        assert (await browser.get("/app/admin/audit", params={"action": "x;y"})).status_code == 422

        # Rows are labelled with their accounts' names, read for the accounts on the page only
        await h.platform.core.accounts.create("bystander", actor=SYSTEM)
        statements: list[str] = []

        def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
            statements.append(statement)

        event.listen(h.platform.core.db.engine, "before_cursor_execute", seen)
        try:
            labelled = await browser.get("/app/admin/audit", params={"action": "smtp_credential"})
        finally:
            event.remove(h.platform.core.db.engine, "before_cursor_execute", seen)
        assert labelled.status_code == 200 and "<td>acme</td>" in labelled.text
        names_read = [s for s in statements if "accounts.name" in s and "FROM accounts" in s]
        assert names_read and all("WHERE accounts.id IN" in s for s in names_read), names_read
        assert (await browser.get("/app/admin/audit", params={"account": "nobody"})).status_code == 422
