"""Statistics: provider and campaign attribution, rates, and counts folded from the event log."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from estafeta import stats
from estafeta.store import accounts
from estafeta.store import messages as message_store
from estafeta.store import stats as store
from estafeta.store.db import Database
from tests.factories import add_event

T0 = datetime(2026, 3, 1, 9, 15, tzinfo=UTC)


def test_providers_come_from_known_domains_then_mx_hosts_then_the_domain() -> None:
    assert stats.provider_of("gmail.com") == "google"
    assert stats.provider_of("hotmail.co.uk") == "microsoft"
    assert stats.provider_of("acme-corp.com", "acmecorp-com.mail.protection.outlook.com") == "microsoft"
    assert stats.provider_of("startup.io", "aspmx.l.google.com.") == "google"
    assert stats.provider_of("gmail.test", "gmail-smtp-in.l.gmail.test") == "gmail.test"
    assert stats.provider_of(None) is None


def test_campaigns_come_from_metadata_or_a_campaign_tag() -> None:
    assert stats.campaign_of('["x"]', "spring-24") == "spring-24"
    assert stats.campaign_of('["news", "campaign:42"]', None) == "42"
    assert stats.campaign_of('["news"]', None) is None
    assert stats.campaign_of(None, None) is None


def test_rates_use_hard_bounces_and_deliveries() -> None:
    assert stats.rates({"delivered": 90, "bounced": 10, "bounced_hard": 4, "complained": 9}) == {
        "bounce": 0.04,
        "complaint": 0.1,
    }
    assert stats.rates({}) == {"bounce": None, "complaint": None}


def _message(
    account: int, mid: str, sender: str, recipients: list[str], **extra: object
) -> message_store.NewMessage:
    return message_store.NewMessage(
        id=mid,
        account_id=account,
        stream=str(extra.pop("stream", "transactional")),
        source="api",
        from_address=sender,
        subject="s",
        message_id_header=f"<{mid}@x>",
        raw=b"x",
        smtputf8=False,
        recipients=recipients,
        **extra,  # type: ignore[arg-type]
    )


def test_counts_are_grouped_by_hour_and_dimension_on_both_backends(db: Database) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    other = db.call(accounts.create_account, "other", T0).id
    db.call(
        message_store.insert_messages,
        [
            _message(
                acme,
                "msg_1",
                "news@acme.test",
                ["a@gmail.com", "b@corp.test"],
                stream="broadcast",
                meta={"campaign_id": 7},
            ),
            _message(acme, "msg_2", "billing@mail.acme.test", ["c@gmail.com"], tags=["campaign:spring"]),
            _message(other, "msg_3", "x@other.test", ["d@gmail.com"]),
        ],
        T0,
    )
    add = add_event
    later = T0 + timedelta(hours=1)
    db.call(
        add,
        account_id=acme,
        type="delivered",
        now=T0,
        message_id="msg_1",
        recipient="a@gmail.com",
        data={"mx": "gmail-smtp-in.l.google.com"},
    )
    db.call(
        add,
        account_id=acme,
        type="delivered",
        now=T0,
        message_id="msg_1",
        recipient="b@corp.test",
        data={"mx": "corp-test.mail.protection.outlook.com"},
    )
    db.call(
        add,
        account_id=acme,
        type="bounced",
        now=later,
        message_id="msg_2",
        recipient="c@gmail.com",
        data={"bounce": {"kind": "hard"}},
    )
    db.call(
        add,
        account_id=acme,
        type="opened",
        now=later,
        message_id="msg_1",
        recipient="A@Gmail.com",
        data={"machine": True},
    )
    db.call(
        add,
        account_id=acme,
        type="opened",
        now=later,
        message_id="msg_1",
        recipient=None,
        data={"machine": False},
    )
    db.call(add, account_id=acme, type="account_paused", now=later, data={})
    rows = db.call(store.event_counts, acme, T0 - timedelta(hours=1), T0 + timedelta(days=1))
    assert (
        sum(r.count for r in rows) == 2 + 3 + 6
    )  # accepted x2, queued x3, the six above; not the other account
    assert {r.hour for r in rows} == {
        datetime(2026, 3, 1, 9, tzinfo=UTC),
        datetime(2026, 3, 1, 10, tzinfo=UTC),
    }
    mx = db.call(store.mx_hosts, acme, T0, T0 + timedelta(days=1))
    assert mx == {
        "gmail.com": "gmail-smtp-in.l.google.com",
        "corp.test": "corp-test.mail.protection.outlook.com",
    }

    groups, total = stats.aggregate(rows, mx, ["provider"], "none")
    by_provider = {g.dimensions["provider"]: g.counts for g in groups}
    assert by_provider["google"]["sent"] == 2 and by_provider["google"]["delivered"] == 1
    assert by_provider["google"]["bounced_hard"] == 1 and by_provider["google"]["opened_machine"] == 1
    assert by_provider["microsoft"]["delivered"] == 1  # corp.test's MX is at Microsoft
    assert by_provider[None]["opened"] == 1 and by_provider[None]["account_paused"] == 1
    assert total["sent"] == 3 and total["opened"] == 2 and total["opened_machine"] == 1
    assert total["account_paused"] == 1  # any event type is counted under its own name
    for name in stats.COUNTS:
        assert sum(g.counts[name] for g in groups) == total[name]

    hourly, _ = stats.aggregate(rows, mx, ["domain", "campaign"], "hour")
    keys = {(g.bucket, g.dimensions["domain"], g.dimensions["campaign"]) for g in hourly}
    assert (datetime(2026, 3, 1, 9, tzinfo=UTC), "acme.test", "7") in keys
    assert (datetime(2026, 3, 1, 10, tzinfo=UTC), "mail.acme.test", "spring") in keys
    daily, _ = stats.aggregate(rows, mx, ["stream"], "day")
    assert {(g.bucket, g.dimensions["stream"]) for g in daily} == {
        (datetime(2026, 3, 1, tzinfo=UTC), "broadcast"),
        (datetime(2026, 3, 1, tzinfo=UTC), "transactional"),
        (datetime(2026, 3, 1, tzinfo=UTC), None),
    }


def test_postmaster_figures_are_stored_once_per_provider_domain_and_day(db: Database) -> None:
    row = store.PostmasterRow("gmail.test", "acme.test", date(2026, 3, 1), 10, 0.1, 1.0, 0.5, "BAD", T0)
    db.call(store.save_postmaster, [row])
    db.call(
        store.save_postmaster,
        [store.PostmasterRow("gmail.test", "acme.test", date(2026, 3, 1), 20, 0.05, 1.0, 1.0, "LOW", T0)],
    )
    (found,) = db.call(store.postmaster, ["acme.test"], date(2026, 3, 1), date(2026, 3, 1))
    assert (found.messages, found.reputation, found.spf_pass_rate) == (20, "LOW", 1.0)
    assert db.call(store.postmaster, ["acme.test"], date(2026, 3, 2), date(2026, 3, 9)) == []
