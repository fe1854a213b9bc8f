"""HTTP API → queue → DKIM-signed delivery, checked against what the simulated receivers got."""

from __future__ import annotations

import base64
import email
from email import policy

import dkim
import pytest

from estafeta import verp
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness


def _events(view: dict, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in view["events"] if e["type"] == kind]


def _dnsfunc(world: World):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return "".join(world.zone.txt(name.decode().rstrip("."))).encode()

    return lookup


async def test_accepted_message_arrives_signed_and_intact(harness: Harness) -> None:
    pdf = b"%PDF-1.4 invoice"
    message_id = await harness.send(
        to=["Ana Pérez <ana@gmail.test>"],
        cc=["bob@yahoo.test"],
        bcc=["audit@outlook.test"],
        subject="Votre facture — n° 42",
        text="Bonjour Ana,\nvoici la facture.\n",
        html="<p>Bonjour Ana,</p><p>voici la facture.</p>",
        attachments=[
            {
                "filename": "facture-42.pdf",
                "content": base64.b64encode(pdf).decode(),
                "content_type": "application/pdf",
            }
        ],
        headers={"X-Campaign": "billing"},
    )
    view = await harness.wait_state(message_id, "delivered")
    assert view["state"] == "delivered"
    assert [e["type"] for e in view["events"]][:2] == ["accepted", "queued"]
    delivered = _events(view, "delivered")
    assert len(delivered) == 3
    assert {e["data"]["mx"] for e in delivered} == {
        "gmail-smtp-in.l.gmail.test",
        "mta5.am0.yahoodns.test",
        "outlook-com.olc.protection.outlook.test",
    }
    assert all(e["data"]["reply"] and e["data"]["code"] == 250 for e in delivered)

    (got,) = harness.world.received("gmail.test")
    assert got.tls and got.dkim == "pass" and got.rcpt_to == ["ana@gmail.test"]
    assert got.mail_from.startswith("bounces+") and got.mail_from.endswith("@bounces.estafeta.test")
    token = got.mail_from.split("+", 1)[1].split("@", 1)[0]
    assert verp.parse_token(token, harness.platform.core.verp_secret) is not None
    assert dkim.verify(got.data, dnsfunc=_dnsfunc(harness.world))
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    assert parsed["Subject"] == "Votre facture — n° 42"
    assert parsed["Message-ID"] == view["message_id"] and parsed["Message-ID"].endswith("@acme.test>")
    assert parsed["Date"] and parsed["X-Campaign"] == "billing"
    assert "Bcc" not in parsed and parsed["Precedence"] is None
    assert b"\r\n" in got.data and b"\n" not in got.data.replace(b"\r\n", b"")
    body = parsed.get_body(("plain",))
    assert body is not None and "voici la facture" in body.get_content()
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "facture-42.pdf" and attachment.get_content() == pdf
    # every recipient gets its own return path
    paths = {r.mail_from for r in harness.world.received()}
    assert len(paths) == 3


async def test_broadcast_mail_is_marked_bulk_and_ed25519_signing_verifies(harness: Harness) -> None:
    message_id = await harness.send(
        **{"from": "News <news@ed.acme.test>"},
        to=["reader@gmail.test"],
        stream="broadcast",
        tags=["spring-sale"],
        headers={
            "List-Unsubscribe": "<https://acme.test/u/1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    await harness.wait_state(message_id, "delivered")
    (got,) = harness.world.received("gmail.test")
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    assert parsed["Precedence"] == "bulk"
    assert parsed["Feedback-ID"] == f"spring-sale:{harness.account_id}:broadcast:estafeta"
    assert b"a=ed25519-sha256" in got.data and got.dkim == "pass"


async def test_unknown_user_bounces_at_once_with_the_reply_recorded(harness: Harness) -> None:
    message_id = await harness.send(to=["nobody@bounce.test"])
    view = await harness.wait_state(message_id, "bounced")
    (bounce,) = _events(view, "bounced")
    assert bounce["data"]["code"] == 550 and "5.1.1" in bounce["data"]["reply"]
    assert "User unknown" in bounce["data"]["reply"]
    assert bounce["data"]["bounce"]["kind"] == "hard"
    assert view["recipients"][0]["attempts"] == 1
    assert harness.world.received("bounce.test") == []


async def test_mailbox_full_is_deferred_then_delivered_on_retry(harness: Harness) -> None:
    message_id = await harness.send(to=["busy@full.test"])
    view = await harness.wait_for(message_id, lambda v: len(_events(v, "deferred")) == 1)
    (deferred,) = _events(view, "deferred")
    assert deferred["data"]["code"] == 452 and "4.2.2" in deferred["data"]["reply"]
    assert view["recipients"][0]["state"] == "deferred"
    harness.advance(299)
    harness.advance(1)  # the first retry is due after 5 minutes
    view = await harness.wait_state(message_id, "delivered")
    assert view["recipients"][0]["attempts"] == 2
    assert len(harness.world.received("full.test")) == 1


async def test_an_address_needing_smtputf8_is_delivered_as_the_first_message_over_starttls(
    harness: Harness,
) -> None:
    # The session's extensions are read anew after STARTTLS, before the first envelope is written.
    message_id = await harness.send(to=["josé@gmail.test"])
    await harness.wait_state(message_id, "delivered")
    assert len(harness.world.received("gmail.test")) == 1


async def test_greylisting_is_retried(harness: Harness) -> None:
    message_id = await harness.send(to=["grey@greylist.test"])
    view = await harness.wait_for(message_id, lambda v: bool(_events(v, "deferred")))
    assert "4.7.1" in _events(view, "deferred")[0]["data"]["reply"]
    harness.advance(300)
    await harness.wait_state(message_id, "delivered")


async def test_421_throttling_defers_and_the_next_attempt_delivers(harness: Harness) -> None:
    harness.world.script("busy@gmail.test", ["421 4.7.28 Our system has detected an unusual rate of mail"])
    message_id = await harness.send(to=["busy@gmail.test"])
    view = await harness.wait_for(message_id, lambda v: bool(_events(v, "deferred")))
    deferred = _events(view, "deferred")[0]["data"]
    assert deferred["code"] == 421 and "4.7.28" in deferred["reply"]
    harness.advance(300)
    await harness.wait_state(message_id, "delivered")
    assert len(harness.world.received("gmail.test")) == 1


async def test_connection_refused_is_retried_until_max_age_then_bounces(
    fresh_world: World,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", delivery={"retry_schedule": [60], "max_age": 200}
    )
    try:
        message_id = await h.send(to=["someone@down.test"])
        for attempt in range(1, 5):  # tries at t = 0, 60, 120, 180 are deferred
            view = await h.wait_for(message_id, lambda v, n=attempt: len(_events(v, "deferred")) == n)
            assert "refused" in _events(view, "deferred")[-1]["data"]["reply"].lower()
            h.advance(60)
        h.advance(20)  # the last try happens at the maximum age, 200 s after acceptance
        view = await h.wait_state(message_id, "bounced")
        assert _events(view, "bounced")[0]["data"]["expired"] is True
        assert view["recipients"][0]["attempts"] == 5
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_mx_fallback_to_address_record_and_nonexistent_domain(harness: Harness) -> None:
    ok = await harness.send(to=["user@nomx.test"])
    missing = await harness.send(to=["user@no-such-domain.test"])
    await harness.wait_state(ok, "delivered")
    view = await harness.wait_state(missing, "bounced")
    (bounce,) = _events(view, "bounced")
    assert "5.1.2" in bounce["data"]["reply"] and "does not exist" in bounce["data"]["reply"]


async def test_connections_are_reused_and_concurrency_is_limited(fresh_world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'e2e.db'}",
        # Sending takes two seconds (the rate), its turn a hundredth: nobody waits, so it never gives way.
        delivery={
            "idle_timeout": 5,
            "give_way_after": 0.01,
            "domain_limits": {"yahoo.test": {"concurrency": 1, "rate": 10}},
        },
    )
    try:
        response = await h.client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"from": "hello@acme.test", "to": [f"u{i}@yahoo.test"], "subject": "s", "text": "t"}
                    for i in range(30)
                ]
            },
        )
        assert response.status_code == 202
        ids = [m["id"] for m in response.json()["messages"]]
        for message_id in ids:
            await h.wait_state(message_id, "delivered")
        stats = fresh_world.stats()["yahoo.test"]
        assert stats.accepted == 30
        assert stats.connections == 1  # one connection, reused past its turn while nobody waits for it
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_pipeline_on_postgresql(fresh_world: World, pg_url: str, backend: str) -> None:
    h = await start_harness(fresh_world, pg_url)
    try:
        message_id = await h.send(to=["pg@outlook.test"])
        await h.wait_state(message_id, "delivered")
        assert len(fresh_world.received("outlook.test")) == 1
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)
