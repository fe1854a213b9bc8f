"""The abuse desk end to end: people on the simulated internet write to abuse@ the platform's return-path
domain through its real inbound listener; their reports are matched to the sending account, counted, put in
the review queue; an operator terminates the account, and its waiting mail is cancelled."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from estafeta.audit import SYSTEM, Actor
from estafeta.cli import app as cli_app
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness
from tests.e2e.test_smtp_relay import SIMPLE, StartRelay, start_relay

__all__ = ["start_relay"]  # the relay fixture, shared with the relay's own tests


@pytest.fixture
async def reporting(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform whose inbound listener receives what the world's people and providers mail back."""
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", reports=True)
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


async def _until(fetch: Any, done: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await fetch()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {found}")
        await asyncio.sleep(0.05)


async def test_reports_are_matched_counted_reviewed_and_the_operator_terminates(
    reporting: Harness, tmp_path: Path
) -> None:
    h = reporting
    core = h.platform.core
    admin = httpx.AsyncClient(
        base_url=h.platform.api_url,
        headers={"Authorization": f"Bearer {(await core.admin_keys.create('ops', actor=SYSTEM)).token}"},
    )

    async def reports() -> list[dict[str, Any]]:
        response = await admin.get("/v1/admin/abuse")
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    waiting = await h.send(to=["someone@down.test"])  # nothing listens there: it waits for a retry
    await h.wait_state(waiting, "deferred")

    # a person pastes our message into a complaint to abuse@ the return-path domain
    quoted = await h.send(to=["angry@yahoo.test"], subject="Spring sale")
    await h.wait_state(quoted, "delivered")
    (first,) = await _until(reports, lambda rows: len(rows) == 1)
    assert (first["account_id"], first["message_id"], first["recipient"]) == (
        h.account_id,
        quoted,
        "angry@yahoo.test",
    )
    assert (first["category"], first["matched_by"], first["mailbox"]) == (
        "spam",
        "verp",
        "abuse@bounces.estafeta.test",
    )
    assert "never signed up" in first["excerpt"]
    view = await h.message(quoted)
    (event,) = [e for e in view["events"] if e["type"] == "abuse_reported"]
    assert event["data"]["report_id"] == first["id"]
    standing = (await h.client.get("/v1/account/reputation")).json()
    assert standing["metrics"]["abuse_reports"] == 1
    reviews = (await admin.get("/v1/admin/reviews")).json()["data"]
    assert [r["id"] for r in reviews] == [first["review_id"]]
    detail = (await admin.get(f"/v1/admin/reviews/{first['review_id']}")).json()
    assert [r["id"] for r in detail["abuse_reports"]] == [first["id"]]
    for params in ({"account_id": 2**64}, {"account_id": 0}, {"cursor": "bm9wZQ"}, {"limit": 101}):
        bad = await admin.get("/v1/admin/abuse", params=params)
        assert bad.status_code == 422, (params, bad.text)
    mine = await admin.get("/v1/admin/abuse", params={"account_id": h.account_id, "limit": 1})
    assert [r["id"] for r in mine.json()["data"]] == [first["id"]] and mine.json()["next_cursor"] is None
    assert (await h.client.get("/v1/admin/abuse")).status_code == 403  # an account's key is no admin key
    kept = (await admin.get(f"/v1/admin/abuse/{first['id']}")).json()
    assert "-----Original Message-----" in kept["raw"] and "Spring sale" in kept["raw"]
    env = {"ESTAFETA_DATABASE_URL": h.platform.settings.database_url, "COLUMNS": "200"}
    shown = CliRunner().invoke(cli_app, ["admin", "abuse", str(first["id"])], env=env)
    assert shown.exit_code == 0, shown.output
    report, _ = json.JSONDecoder().raw_decode(shown.output)  # the report, then the message as received
    assert report["received_at"] == first["received_at"]  # written as the API writes it

    # another forwards it as an attachment, calling it phishing: all sending pauses at once
    attached = await h.send(to=["phished@yahoo.test"])
    await h.wait_state(attached, "delivered")
    rows = await _until(reports, lambda rows: len(rows) == 2)
    assert (rows[0]["category"], rows[0]["message_id"], rows[0]["review_id"]) == (
        "phishing",
        attached,
        first["review_id"],  # the same review, with one more reason
    )
    newest = (await admin.get("/v1/admin/abuse", params={"limit": 1})).json()
    older = (await admin.get("/v1/admin/abuse", params={"limit": 1, "cursor": newest["next_cursor"]})).json()
    assert [newest["data"][0]["id"], older["data"][0]["id"]] == [rows[0]["id"], first["id"]]
    standing = (await h.client.get("/v1/account/reputation")).json()
    assert {s["state"] for s in standing["streams"].values()} == {"paused"}
    refused = await h.client.post(
        "/v1/messages", json={"from": "hello@acme.test", "to": ["x@gmail.test"], "subject": "s", "text": "t"}
    )
    assert refused.status_code == 403

    # the operator lists the reports on the command line, then terminates the account through the API
    runner = CliRunner()
    env = {"ESTAFETA_DATABASE_URL": h.platform.settings.database_url, "COLUMNS": "200"}
    listed = runner.invoke(cli_app, ["admin", "abuse"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "phishing" in listed.output and "verp" in listed.output
    unknown = await admin.post("/v1/admin/accounts/999999/terminate", json={"reason": "x"})
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    done = await admin.post(f"/v1/admin/accounts/{h.account_id}/terminate", json={"reason": "phishing kit"})
    assert done.status_code == 200, done.text
    assert done.json()["cancelled"] == 1 and done.json()["by"].startswith("admin:")
    again = await admin.post(f"/v1/admin/accounts/{h.account_id}/terminate", json={"reason": "again"})
    assert again.status_code == 409

    cancelled = await core.messages.get(h.account_id, waiting)
    assert cancelled is not None and [r.state for r in cancelled.recipients] == ["cancelled"]
    assert [e.data["by"] for e in cancelled.events if e.type == "cancelled"] == [done.json()["by"]]
    h.advance(3600)  # past any retry: still nothing goes out
    await asyncio.sleep(0.5)
    assert h.world.received("down.test") == []
    assert [r.state for r in (await core.messages.get(h.account_id, waiting)).recipients] == ["cancelled"]  # type: ignore[union-attr]
    locked_out = await h.client.get("/v1/account/reputation")
    assert locked_out.status_code == 401 and locked_out.headers["content-type"] == "application/problem+json"
    (review,) = (await admin.get("/v1/admin/reviews", params={"state": "rejected"})).json()["data"]
    assert review["id"] == first["review_id"]
    await admin.aclose()


async def test_a_worker_holding_the_lease_sends_nothing_once_the_account_is_terminated(
    harness: Harness,
) -> None:
    h = harness
    core = h.platform.core
    await h.platform.engine.stop(grace=2)  # another delivery process will hold the entry instead
    message_id = await h.send(to=["ann@yahoo.test"])
    worker = core.delivery_engine()
    (job,) = await worker.queue.claim(10)
    await worker.sources.refresh()
    await worker.helo.refresh()
    worker._dispatch(job)  # its lane's sender starts, held back by the destination's pause
    lane = worker.lanes[("yahoo.test", None)]
    lane.resume_at = time.monotonic() + 0.3
    await core.terminations.terminate(h.account_id, Actor("cli", "127.0.0.1"), "fraud")
    await worker.queue.read_terminations()  # what its claim loop does when woken
    await asyncio.wait_for(asyncio.gather(*lane.senders), timeout=15)
    assert [r for r in h.world.received("yahoo.test") if "ann@yahoo.test" in r.rcpt_to] == []
    assert not worker.in_flight and not worker.held
    view = await core.messages.get(h.account_id, message_id)
    assert view is not None and [r.state for r in view.recipients] == ["cancelled"]


async def test_the_operator_terminates_from_the_review_page_with_its_csrf_token(reporting: Harness) -> None:
    h = reporting
    users = h.platform.core.users
    user = await users.create("ops@estafeta.test", "a long enough password", operator=True, actor=SYSTEM)
    session = await users.start_session(user, origin="127.0.0.1")
    await h.platform.core.reputation.set_stream(
        h.account_id, "broadcast", "paused", "looks bad", Actor("admin:x", "127.0.0.1")
    )
    (review,) = await h.platform.core.reputation.reviews()
    async with httpx.AsyncClient(
        base_url=h.platform.api_url, cookies={"estafeta_session": session.cookie}
    ) as browser:
        page = await browser.get(f"/app/admin/reviews/{review.id}")
        assert page.status_code == 200 and "Terminate the account" in page.text
        assert (await browser.get("/app/admin/abuse")).status_code == 200
        form = {"reason": "fraud", "review_id": str(review.id)}
        forged = await browser.post(f"/app/admin/accounts/{h.account_id}/terminate", data=form)
        assert forged.status_code == 403
        assert await h.platform.core.terminations.termination(h.account_id) is None
        done = await browser.post(
            f"/app/admin/accounts/{h.account_id}/terminate",
            data={**form, "csrf_token": session.csrf_token},
        )
        assert done.status_code == 303 and done.headers["location"].startswith(
            f"/app/admin/reviews/{review.id}"
        )
        page = await browser.get(done.headers["location"])
        assert "Account terminated" in page.text and "fraud" in page.text
    found = await h.platform.core.terminations.termination(h.account_id)
    assert found is not None and (found.by, found.reason) == (f"user:{user.id}/ops@estafeta.test", "fraud")


async def test_the_relay_refuses_a_terminated_account(start_relay: StartRelay) -> None:
    relay = await start_relay()
    logged_in = await asyncio.to_thread(relay.login)  # a session that logged in before the termination
    await relay.platform.core.terminations.terminate(relay.account_id, Actor("cli", "127.0.0.1"), "spam run")

    def attempt() -> tuple[int, bytes]:
        try:
            logged_in.sendmail("hello@acme.test", ["ana@gmail.test"], SIMPLE)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
        finally:
            logged_in.close()
        return 250, b""

    code, text = await asyncio.to_thread(attempt)
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    with pytest.raises(smtplib.SMTPAuthenticationError) as login:
        await asyncio.to_thread(relay.login)
    assert login.value.smtp_code == 535 and login.value.smtp_error.startswith(b"5.7.8")
