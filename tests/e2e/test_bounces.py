"""Bounces, complaints and suppression end to end: the simulated providers bounce, complain and answer out
of office, late reports come back to the platform's inbound listener, and suppressed addresses are
never mailed again."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from estafeta import verp
from estafeta.audit import SYSTEM
from estafeta.bounces import classify_message
from estafeta.cli import app as cli_app
from estafeta.store import suppressions as suppression_store
from estafeta.world import World
from tests.e2e.audience_support import eventually
from tests.e2e.harness import Harness, start_harness
from tests.e2e.test_smtp_relay import SIMPLE, StartRelay, _send_raw, _session, start_relay
from tests.factories import add_sender

__all__ = ["start_relay"]  # the relay fixture, shared with the relay's own tests

CORPUS = Path(__file__).parents[1] / "data" / "bounces"


@pytest.fixture
async def reporting(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform whose inbound listener receives what the world's providers report back."""
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", reports=True)
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


def _events(view: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["type"] == kind]


async def _other_account(h: Harness, name: str = "globex") -> httpx.AsyncClient:
    """An API client for a second account that sends from its own domain, globex.test."""
    token = (await add_sender(h.platform.core, name, f"{name}.test", algorithm="ed25519-sha256")).token
    return httpx.AsyncClient(base_url=h.platform.api_url, headers={"Authorization": f"Bearer {token}"})


async def _send(client: httpx.AsyncClient, sender: str, *recipients: str, **extra: Any) -> dict[str, Any]:
    body = {"from": sender, "to": list(recipients), "subject": "Hello", "text": "Hello there.\n", **extra}
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json()["messages"][0])


async def _entries(
    client: httpx.AsyncClient, path: str = "/v1/suppressions", **params: Any
) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- hard bounces ----------------------------------------------------------------------------------


async def test_hard_bounce_suppresses_the_address_for_every_account(reporting: Harness) -> None:
    h = reporting
    message_id = await h.send(to=["nobody@bounce.test"])
    view = await h.wait_state(message_id, "bounced")
    assert view["recipients"][0]["attempts"] == 1  # never retried
    page = await _entries(h.client, q="nobody@bounce.test")
    assert [(e["value"], e["reason"], e["scope"]) for e in page["data"]] == [
        ("nobody@bounce.test", "hard-bounce", "account")
    ]
    assert page["global_entry"]["reason"] == "hard-bounce"

    again = await _send(h.client, "hello@acme.test", "nobody@bounce.test", "ana@gmail.test")
    assert {r["email"]: (r["state"], r.get("reason")) for r in again["recipients"]} == {
        "ana@gmail.test": ("queued", None),
        "nobody@bounce.test": ("suppressed", "hard-bounce"),
    }
    view = await h.wait_for(again["id"], lambda v: v["state"] == "delivered")
    assert [e["data"] for e in _events(view, "suppressed")] == [{"reason": "hard-bounce", "scope": "account"}]
    assert len(h.world.received("bounce.test")) == 0 and h.world.stats()["bounce.test"].rejected_5xx == 1

    async with await _other_account(h) as globex:
        theirs = await _send(globex, "info@globex.test", "nobody@bounce.test")
        assert theirs["recipients"] == [
            {**theirs["recipients"][0], "state": "suppressed", "reason": "hard-bounce"}
        ]
        view = (await globex.get(f"/v1/messages/{theirs['id']}")).json()
        assert view["state"] == "suppressed"
        assert _events(view, "suppressed")[0]["data"] == {"reason": "hard-bounce", "scope": "global"}
    assert h.world.stats()["bounce.test"].rejected_5xx == 1  # nobody tried again


async def test_late_dsn_turns_a_delivery_into_a_hard_bounce_and_suppresses(reporting: Harness) -> None:
    h = reporting
    message_id = await h.send(to=["gone@outlook.test"], subject="Your order")
    view = await h.wait_for(message_id, lambda v: bool(_events(v, "bounced")))
    assert _events(view, "delivered")  # the provider said 250 first…
    (bounce,) = _events(view, "bounced")  # …then mailed a non-delivery report to the return path
    assert bounce["data"]["async"] is True
    assert bounce["data"]["bounce"] == {
        "kind": "hard",
        "reason": "user-unknown",
        "status": "5.1.1",
        "scope": "global",
        "blame": "recipient",
    }
    assert "RecipNotFound" in bounce["data"]["diagnostic"] and bounce["data"]["source"] == "dsn"
    assert view["state"] == "bounced" and view["recipients"][0]["state"] == "bounced"

    async def report_counted() -> bool:  # the world counts it once its send returns, after it was read
        return h.world.stats()["outlook.test"].reports_sent == 1

    await eventually(report_counted, "the world to count its report")

    async with await _other_account(h) as globex:
        for client, sender in ((h.client, "hello@acme.test"), (globex, "info@globex.test")):
            again = await _send(client, sender, "gone@outlook.test")
            assert again["recipients"][0]["state"] == "suppressed"
    assert len(h.world.received("outlook.test")) == 1


async def test_nonexistent_domain_goes_on_the_global_list(reporting: Harness) -> None:
    h = reporting
    await h.wait_state(await h.send(to=["a@no-such-domain.test"]), "bounced")
    async with await _other_account(h) as globex:
        theirs = await _send(globex, "info@globex.test", "someone-else@no-such-domain.test")
    assert theirs["recipients"][0]["reason"] == "no-mx"


# -- soft bounces ----------------------------------------------------------------------------------


async def test_soft_bounce_is_retried_then_delivered_and_not_suppressed(reporting: Harness) -> None:
    h = reporting
    message_id = await h.send(to=["busy@full.test"])
    await h.wait_for(message_id, lambda v: len(_events(v, "deferred")) == 1)
    h.advance(300)
    view = await h.wait_state(message_id, "delivered")
    assert view["recipients"][0]["attempts"] == 2
    assert (await _entries(h.client))["data"] == []
    again = await _send(h.client, "hello@acme.test", "busy@full.test")
    assert again["recipients"][0]["state"] == "queued"


async def test_persistent_soft_bounces_become_a_hard_suppression(fresh_world: World, tmp_path: Path) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'e2e.db'}",
        delivery={"retry_schedule": [60], "max_age": 120},
        suppression={"soft_bounce_limit": 2, "soft_bounce_days": 1},
    )
    try:
        first = await h.send(to=["stuffed@full.test"])
        for deferrals in (1, 2):  # tried at t = 0 and 60: 452 4.2.2 each time
            await h.wait_for(first, lambda v, n=deferrals: len(_events(v, "deferred")) == n)
            h.advance(60)
        view = await h.wait_state(first, "bounced")  # the try at t = 120 is past the maximum age
        assert _events(view, "bounced")[0]["data"]["expired"] is True
        assert view["recipients"][0]["attempts"] == 3
        assert (await _entries(h.client))["data"] == []  # one message is not yet a pattern

        second = await h.send(to=["stuffed@full.test"])
        await h.wait_for(second, lambda v: len(_events(v, "deferred")) == 1)
        h.advance(120)  # the retry is due, and the message has reached its maximum age
        await h.wait_state(second, "bounced")
        (entry,) = (await _entries(h.client))["data"]
        assert (entry["value"], entry["reason"], entry["scope"]) == (
            "stuffed@full.test",
            "soft-bounce-persistent",
            "account",
        )
        third = await _send(h.client, "hello@acme.test", "stuffed@full.test")
        assert third["recipients"][0]["reason"] == "soft-bounce-persistent"
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


# -- complaints and automatic replies --------------------------------------------------------------


async def test_complaint_suppresses_the_recipient_for_that_account_at_once(reporting: Harness) -> None:
    h = reporting
    message_id = await h.send(
        **{"from": "News <news@acme.test>"}, to=["complainer@yahoo.test"], stream="broadcast", tags=["spring"]
    )
    view = await h.wait_for(message_id, lambda v: bool(_events(v, "complained")))
    (complaint,) = _events(view, "complained")
    assert complaint["recipient"] == "complainer@yahoo.test"
    assert complaint["data"]["feedback_type"] == "abuse"
    assert complaint["data"]["feedback_id"] == f"spring:{h.account_id}:broadcast:estafeta"
    assert complaint["data"]["matched_by"] == "verp"
    assert view["recipients"][0]["state"] == "delivered"  # a complaint is not a bounce

    (entry,) = (await _entries(h.client, reason="complaint"))["data"]
    assert entry["value"] == "complainer@yahoo.test" and entry["scope"] == "account"
    again = await _send(h.client, "hello@acme.test", "complainer@yahoo.test")
    assert again["recipients"][0]["reason"] == "complaint"
    async with await _other_account(h) as globex:  # other senders may still write to them
        theirs = await _send(globex, "info@globex.test", "complainer@yahoo.test")
    assert theirs["recipients"][0]["state"] == "queued"


async def test_out_of_office_reply_is_recorded_and_never_suppresses(reporting: Harness) -> None:
    h = reporting
    message_id = await h.send(to=["ooo@outlook.test"])
    view = await h.wait_for(message_id, lambda v: bool(_events(v, "auto_replied")))
    assert view["state"] == "delivered" and not _events(view, "bounced")
    assert _events(view, "auto_replied")[0]["data"] == {"async": True, "reason": "out-of-office"}
    assert (await _entries(h.client))["data"] == []
    again = await h.send(to=["ooo@outlook.test"])
    await h.wait_state(again, "delivered")


# -- the inbound listener ----------------------------------------------------------------------------


async def test_inbound_listener_accepts_only_signed_return_paths_the_fbl_and_abuse(
    reporting: Harness,
) -> None:
    assert reporting.platform.inbound_address is not None
    host, port = reporting.platform.inbound_address
    good = verp.return_path(12345, reporting.platform.core.verp_secret, "bounces.estafeta.test")
    forged = good.replace("bounces+", "bounces+1")

    def scenario() -> dict[str, int]:
        codes = {}
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("mx.example.test")
            assert client.mail("<>")[0] == 250
            for rcpt in (
                good,
                "fbl@bounces.estafeta.test",
                "FBL@Bounces.Estafeta.Test",
                forged,
                "bounces+nonsense@bounces.estafeta.test",
                "webmaster@bounces.estafeta.test",
                "victim@gmail.test",
                good.replace("bounces.estafeta.test", "gmail.test"),
                "abuse@gmail.test",
                "postmaster@bounces.estafeta.test",
                "Abuse@Bounces.Estafeta.Test",
            ):
                codes[rcpt] = client.rcpt(rcpt)[0]
        return codes

    codes = await asyncio.to_thread(scenario)
    assert [codes[r] for r in codes] == [250, 250, 250, 550, 550, 550, 550, 550, 550, 250, 250]


async def test_a_report_about_an_unknown_message_changes_nothing(reporting: Harness) -> None:
    assert reporting.platform.inbound_address is not None
    host, port = reporting.platform.inbound_address
    report = (CORPUS / "dsn_01.txt").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    rcpt = verp.return_path(999_999, reporting.platform.core.verp_secret, "bounces.estafeta.test")

    def scenario() -> tuple[int, bytes]:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("mx.example.test")
            assert client.mail("<>")[0] == 250
            assert client.rcpt(rcpt)[0] == 250 and client.rcpt("fbl@bounces.estafeta.test")[0] == 250
            return client.data(report)

    assert (await asyncio.to_thread(scenario))[0] == 250
    assert (await reporting.client.get("/v1/events")).json()["data"] == []


QMAIL_BOUNCE = (
    "From: MAILER-DAEMON@mx.yahoo.test\r\n"
    "To: <{to}>\r\n"
    "Subject: failure notice\r\n"
    "\r\n"
    "Hi. This is the qmail-send program at mx.yahoo.test.\r\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\r\n"
    "\r\n"
    "<{rcpt}>:\r\n"
    "Sorry, no mailbox here by that name. (#5.1.1)\r\n"
)
DELAYED_DSN = (
    "From: Mail Delivery System <MAILER-DAEMON@relay.yahoo.test>\r\n"
    "To: <{to}>\r\n"
    "Subject: Delayed Mail (still being retried)\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\nContent-Type: text/plain\r\n\r\nThis is a warning only; delivery will continue.\r\n"
    "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; relay.yahoo.test\r\n\r\n"
    "Final-Recipient: rfc822; {rcpt}\r\nAction: delayed\r\nStatus: 4.2.2\r\n"
    "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\r\n"
    "--b1--\r\n"
)


async def test_free_form_and_delayed_reports_on_the_return_path(reporting: Harness) -> None:
    h = reporting
    hard, soft = await h.send(to=["ana@yahoo.test"]), await h.send(to=["bob@yahoo.test"])
    await h.wait_state(hard, "delivered")
    await h.wait_state(soft, "delivered")
    paths = {m.rcpt_to[0]: m.mail_from for m in h.world.received("yahoo.test")}
    assert h.platform.inbound_address is not None
    host, port = h.platform.inbound_address

    def deliver(template: str, rcpt: str, tls: bool) -> int:
        """Mail a report to the return path the message went out with; the reply to its DATA."""
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("relay.yahoo.test")
            assert client.has_extn("starttls")  # offered, not required: an MX takes mail either way
            if tls:  # as sending MTAs do: opportunistic, the certificate is not checked
                unverified = ssl.create_default_context()
                unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
                assert client.starttls(context=unverified)[0] == 220
                client.ehlo("relay.yahoo.test")
            assert client.mail("<>")[0] == 250 and client.rcpt(paths[rcpt])[0] == 250
            return client.data(template.format(to=paths[rcpt], rcpt=rcpt).encode())[0]

    assert await asyncio.to_thread(deliver, QMAIL_BOUNCE, "ana@yahoo.test", True) == 250
    assert await asyncio.to_thread(deliver, DELAYED_DSN, "bob@yahoo.test", False) == 250
    view = await h.message(hard)  # committed before the 250: no waiting
    (bounce,) = _events(view, "bounced")
    assert bounce["data"]["bounce"]["reason"] == "user-unknown" and bounce["data"]["source"] == "heuristic"
    assert view["recipients"][0]["state"] == "bounced"
    view = await h.message(soft)
    (delay,) = _events(view, "soft_bounced")
    assert delay["data"]["bounce"] == {
        "kind": "soft",
        "reason": "mailbox-full",
        "status": "4.2.2",
        "scope": "none",
        "blame": "recipient",
    }
    assert view["recipients"][0]["state"] == "delivered" and not _events(view, "bounced")
    assert [e["value"] for e in (await _entries(h.client))["data"]] == ["ana@yahoo.test"]


# Single-recipient samples of every kind that reaches the return path, from the labelled corpus.
LISTENER_SAMPLES = [
    "bounceparser/doesnotexist.msg",  # DSN, user unknown at RCPT: hard
    "php_bounce_handler/13.eml",  # Exim free text, unrouteable address: hard
    "bounceparser/qmail.unknown.msg",  # qmail free text: hard
    "bounceparser/quota-6.msg",  # DSN, too many messages on the server: soft
    "php_bounce_handler/29.eml",  # Exim delay warning: soft
    "bounceparser/spam-rejection12.msg",  # the sender refused: soft, nothing suppressed
    "bounceparser/rcpt-dne.msg",  # user unknown only after DATA: soft
    "bounceparser/user-unknown-disabled.msg",  # Gmail disabled account: soft by default
    "php_bounce_handler/sendmail-dsn-hdrs-delivered.eml",  # success report: nothing
    "php_bounce_handler/vac3.eml",  # out of office
    "bounceparser/aol-vacation.msg",  # out of office
    "flanker/complaint-yahoo.eml",  # ARF complaint
    "php_bounce_handler/fbl-hotmail.txt",  # Hotmail complaint without a feedback-report part
    "go_gmime/FBL-auth.eml",  # ARF auth-failure report: not a complaint
]
_EVENT_OF_VERDICT = {"hard": "bounced", "soft": "soft_bounced", "complaint": "complained"}


async def test_the_listener_records_what_classify_says(reporting: Harness) -> None:
    h = reporting
    sent = [await h.send(to=[f"sample{i}@yahoo.test"]) for i in range(len(LISTENER_SAMPLES))]
    for message_id in sent:
        await h.wait_state(message_id, "delivered")
    paths = {m.rcpt_to[0]: m.mail_from for m in h.world.received("yahoo.test")}
    assert h.platform.inbound_address is not None
    host, port = h.platform.inbound_address

    def deliver(return_path: str, raw: bytes) -> int:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("mx.example.test")
            assert client.mail("<>")[0] == 250 and client.rcpt(return_path)[0] == 250
            return client.data(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))[0]

    for i, (name, message_id) in enumerate(zip(LISTENER_SAMPLES, sent, strict=True)):
        raw = (CORPUS / name).read_bytes()
        expected = classify_message(raw)
        assert await asyncio.to_thread(deliver, paths[f"sample{i}@yahoo.test"], raw) == 250, name
        view = await h.message(message_id)  # recorded before the 250
        recorded = [e for e in view["events"] if e["type"] not in ("accepted", "queued", "delivered")]
        if expected.verdict in _EVENT_OF_VERDICT:
            (event,) = recorded
            assert event["type"] == _EVENT_OF_VERDICT[expected.verdict], name
            if expected.verdict != "complaint":
                assert event["data"]["bounce"]["reason"] == expected.reason, name
                assert event["data"]["bounce"]["scope"] == expected.suppresses, name
        elif expected.reason == "out-of-office":
            assert [e["type"] for e in recorded] == ["auto_replied"], name
        else:
            assert recorded == [], name
    entries = {(e["value"], e["reason"]) for e in (await _entries(h.client))["data"]}
    hard = [
        i
        for i, name in enumerate(LISTENER_SAMPLES)
        if classify_message((CORPUS / name).read_bytes()).verdict == "hard"
    ]
    complained = [
        i
        for i, name in enumerate(LISTENER_SAMPLES)
        if classify_message((CORPUS / name).read_bytes()).verdict == "complaint"
    ]
    assert entries == {(f"sample{i}@yahoo.test", "hard-bounce") for i in hard} | {
        (f"sample{i}@yahoo.test", "complaint") for i in complained
    }


# -- spam traps --------------------------------------------------------------------------------------


async def test_spam_trap_hits_are_dropped_counted_and_listed_globally(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", suppression={"spam_traps": ["trap.test"]}
    )
    try:
        sent = await _send(h.client, "hello@acme.test", "pristine@trap.test", "ana@gmail.test")
        assert {r["email"]: r["state"] for r in sent["recipients"]} == {
            "ana@gmail.test": "queued",
            "pristine@trap.test": "suppressed",
        }
        hits = (await h.client.get("/v1/events", params={"type": "trap_hit"})).json()["data"]
        assert [e["recipient"] for e in hits] == ["pristine@trap.test"]
        await h.wait_for(sent["id"], lambda v: v["state"] == "delivered")
        assert h.world.received("trap.test") == []
        admin_key = (await h.platform.core.admin_keys.create("ops", actor=SYSTEM)).token
        listed = await h.client.get(
            "/v1/admin/suppressions",
            params={"reason": "spam-trap"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert [e["value"] for e in listed.json()["data"]] == ["pristine@trap.test"]
        async with await _other_account(h) as globex:  # the trap is now off limits to everyone
            theirs = await _send(globex, "info@globex.test", "pristine@trap.test")
        assert theirs["recipients"][0]["reason"] == "spam-trap"
        hits = (await h.client.get("/v1/events", params={"type": "trap_hit"})).json()["data"]
        assert len(hits) == 1  # the other account's hit is counted against the other account
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


# -- lists through the API -------------------------------------------------------------------------


async def test_account_list_add_search_remove_with_audit_and_csv(harness: Harness) -> None:
    h = harness
    created = await h.client.post("/v1/suppressions", json={"address": "Ana@Gmail.test", "note": "asked"})
    assert created.status_code == 201 and created.json()["value"] == "Ana@gmail.test"
    same = await h.client.post(
        "/v1/suppressions", json={"address": "ana@gmail.test", "reason": "unsubscribe"}
    )
    assert same.status_code == 200 and same.json()["reason"] == "manual"
    domain = await h.client.post("/v1/suppressions", json={"address": "competitor.test"})
    assert domain.status_code == 201 and domain.json()["kind"] == "domain"
    bad = await h.client.post("/v1/suppressions", json={"address": "not an address", "reason": "x"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "address"
    wrong_reason = await h.client.post("/v1/suppressions", json={"address": "a@b.test", "reason": "x"})
    assert wrong_reason.status_code == 422 and wrong_reason.json()["errors"][0]["field"] == "reason"

    sent = await _send(h.client, "hello@acme.test", "ana@gmail.test", "boss@competitor.test")
    assert [r["reason"] for r in sent["recipients"]] == ["manual", "manual"]

    first = await _entries(h.client, limit=1)
    assert len(first["data"]) == 1 and first["next_cursor"]
    rest = await _entries(h.client, limit=1, cursor=first["next_cursor"])
    assert rest["data"][0]["value"] == "competitor.test" and rest["next_cursor"] is None
    assert (await h.client.get("/v1/suppressions", params={"cursor": "bogus"})).status_code == 422

    exported = await h.client.get("/v1/suppressions/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[1].startswith("Ana@gmail.test,address,manual,")

    assert (
        await h.client.delete("/v1/suppressions/ANA@gmail.test", params={"note": "oops"})
    ).status_code == 204
    assert (await h.client.delete("/v1/suppressions/ana@gmail.test")).status_code == 404
    again = await _send(h.client, "hello@acme.test", "ana@gmail.test")
    assert again["recipients"][0]["state"] == "queued"

    csv_headers = {"Content-Type": "text/csv"}
    refused = await h.client.post(
        "/v1/suppressions/import", content=b"value\nok@gmail.test\nnope\n", headers=csv_headers
    )
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["line 3"]
    assert refused.json()["errors"][0]["reason"].startswith("'nope': ")
    assert (await _entries(h.client, q="ok@gmail.test"))["data"] == []  # nothing partial
    malformed = await h.client.post(
        "/v1/suppressions/import", content=b"email\nok@gmail.test\n", headers=csv_headers
    )
    assert malformed.status_code == 422
    imported = await h.client.post("/v1/suppressions/import", content=exported.content, headers=csv_headers)
    assert imported.json() == {"added": 1, "already_listed": 1}

    prefix = h.token.split("_")[1]
    trail = h.platform.core.db.call(suppression_store.audit_trail, h.account_id, "ana@gmail.test")
    assert [(a.action, a.actor, a.note) for a in trail] == [
        ("add", f"api:{prefix}", "asked"),
        ("remove", f"api:{prefix}", "oops"),
        ("add", f"api:{prefix}", "import"),
    ]


async def test_global_list_is_for_admin_keys_only(harness: Harness) -> None:
    h = harness
    admin_key = await h.platform.core.admin_keys.create("ops", actor=SYSTEM)
    ops = {"Authorization": f"Bearer {admin_key.token}"}
    added = await h.client.post("/v1/admin/suppressions", json={"address": "x@gmail.test"}, headers=ops)
    assert added.status_code == 201 and added.json()["scope"] == "global"

    for method, path, body in (
        ("GET", "/v1/admin/suppressions", None),
        ("POST", "/v1/admin/suppressions", {"address": "y@gmail.test"}),
        ("DELETE", "/v1/admin/suppressions/x@gmail.test", None),
        ("GET", "/v1/admin/suppressions/export", None),
    ):
        response = await h.client.request(method, path, json=body)  # an account key
        assert response.status_code == 403, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    anonymous = await h.client.get("/v1/admin/suppressions", headers={"Authorization": "Bearer estadm_no_no"})
    assert anonymous.status_code == 401

    # the account cannot lift a global entry through its own list either, but it may see it
    assert (await h.client.delete("/v1/suppressions/x@gmail.test")).status_code == 404
    page = await _entries(h.client, q="x@gmail.test")
    assert page["data"] == [] and page["global_entry"]["value"] == "x@gmail.test"
    assert (await _send(h.client, "hello@acme.test", "x@gmail.test"))["recipients"][0][
        "state"
    ] == "suppressed"

    removed = await h.client.delete("/v1/admin/suppressions/X@gmail.test", headers=ops)
    assert removed.status_code == 204
    listed = await h.client.get("/v1/admin/suppressions", headers=ops)
    assert listed.json()["data"] == []
    csv = await h.client.post(
        "/v1/admin/suppressions/import",
        content=b"value,reason\nspamtrap@gmail.test,spam-trap\ndead.test,no-mx\n",
        headers={**ops, "Content-Type": "text/csv"},
    )
    assert csv.json() == {"added": 2, "already_listed": 0}
    exported = await h.client.get("/v1/admin/suppressions/export", headers=ops)
    assert [line.split(",")[:3] for line in exported.text.splitlines()[1:]] == [
        ["spamtrap@gmail.test", "address", "spam-trap"],
        ["dead.test", "domain", "no-mx"],
    ]


# -- classification ----------------------------------------------------------------------------------


async def test_classify_endpoint_reads_a_raw_message(harness: Harness) -> None:
    raw = (CORPUS / "dsn_01.txt").read_bytes()
    response = await harness.client.post(
        "/v1/bounces/classify", content=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "verdict": "soft",
        "reason": "mailbox-full",
        "recipients": ["userx@example.com"],
        "status": "5.0.0",
        "source": "dsn",
        "suppresses": "none",
    }
    unsupported = await harness.client.post(
        "/v1/bounces/classify", content=raw, headers={"Content-Type": "application/json"}
    )
    assert unsupported.status_code == 415
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as anonymous:
        assert (await anonymous.post("/v1/bounces/classify", content=raw)).status_code == 401


def test_cli_classifies_files_as_a_table_and_as_json() -> None:
    files = [
        CORPUS / "bounce_email" / "tt_bounce_01.eml",
        CORPUS / "bounce_email" / "tt_1234210666.eml",
    ]
    runner = CliRunner()
    as_json = runner.invoke(cli_app, ["bounces", "classify", "--json", *map(str, files)])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert [Path(r["file"]).name for r in rows] == ["tt_bounce_01.eml", "tt_1234210666.eml"]
    assert rows[1]["verdict"] == "none" and rows[1]["reason"] == "out-of-office"
    assert rows[0]["verdict"] == "hard" and rows[0]["reason"] == "no-such-domain" and rows[0]["recipients"]
    assert rows[0]["suppresses"] == "global" and "evidence" not in rows[0]
    table = runner.invoke(cli_app, ["bounces", "classify", *map(str, files)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "Bounce classification" in table.output and "out-of-office" in table.output
    assert rows[0]["reason"] in table.output
    explained = runner.invoke(
        cli_app, ["bounces", "classify", "--explain", str(files[0])], env={"COLUMNS": "200"}
    )
    assert explained.exit_code == 0, explained.output
    assert (
        "unrouteable mail domain" in explained.output.lower()
        and "suppressed for every account" in explained.output
    )
    as_json = runner.invoke(cli_app, ["bounces", "classify", "--json", "--explain", str(files[0])])
    assert json.loads(as_json.output)[0]["evidence"][0]["rule"] == "format"
    missing = runner.invoke(cli_app, ["bounces", "classify", "no-such-file.eml"])
    assert missing.exit_code != 0


# -- the SMTP relay ----------------------------------------------------------------------------------


async def test_relay_answers_250_when_every_recipient_is_suppressed(start_relay: StartRelay) -> None:
    relay = await start_relay()
    ops = (await relay.platform.core.admin_keys.create("ops", actor=SYSTEM)).token
    async with httpx.AsyncClient(
        base_url=relay.platform.api_url, headers={"Authorization": f"Bearer {ops}"}
    ) as client:
        assert (
            await client.post("/v1/admin/suppressions", json={"address": "ana@gmail.test"})
        ).status_code == 201

    def scenario() -> tuple[int, bytes]:
        with _session(relay.login) as client:
            return _send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE)

    code, text = await asyncio.to_thread(scenario)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as msg_")
    view, _ = relay.stored(text.rsplit(b" ", 1)[1].decode())
    assert [(r.recipient, r.state) for r in view.recipients] == [("ana@gmail.test", "suppressed")]
